"""Orchestration: the steps around the core calls that the command line, the report, the widgets and the
notebooks share, written once here instead of in each of them.

* :func:`parent_batches`: the batches a parent reads (text through its tokenizer for language models, images
  at its input size for vision parents) of a split, within a token budget;
* :class:`Budget`, :func:`budget` and :func:`quick_mode`: how much work each stage of a job does, normally or
  in quick mode (``quick=True``, or ``SUBCLONE_VIZ_QUICK=1`` in the environment, which the tests set), where
  every stage shrinks to seconds;
* :func:`default_destination`: the destination a caller starts from when none is asked for: two thirds of
  the parent's depth and width (SmolLM2-135M, 30 x 576: 20 blocks x 384), snapped to a width the parent's
  heads allow;
* :func:`~subclone_viz.subclone.random_init` (beside :func:`~subclone_viz.subclone.subclone`, whose baseline it
  is): a destination of the same shape with the architecture's own random initialization;
* :func:`has_loss`, :func:`reads_text`: what a parent can be scored on and what it reads;
* :func:`report_records`: the main job's pipeline (profile on a shuffled, document-diverse sample of the
  training split, block ablation, token trace, plan, untrained loss, calibration stability, size grid,
  training comparison), returned as records that :func:`subclone_viz.report.build_report`
  lays out.

Nothing here draws or prints tables: ``report.py`` lays pages out, ``cli.py`` parses and prints, ``widgets.py``
shows; all three call these functions.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.parent_batches(parent, "train", shuffle=True)     # text: seq_len and batch size from the budget
    >>> heldout = sv.parent_batches(parent, "heldout", tokens=256)
    >>> len(heldout), heldout.tokens_per_batch                       # enough 4 x 128 batches for 256 tokens
    (1, 512)
    >>> spec = sv.default_destination(parent)
    >>> spec
    DestinationSpec(layers=20, hidden=384, ffn=None, heads=None, kv_heads=None)
    >>> baseline = sv.random_init(parent, spec, seed=0)              # a LlamaForCausalLM of that shape
    >>> 10 < sv.evaluate(baseline, parent.family, heldout).loss < 12     # about ln(49152) = 10.8 nats
    True
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import distributed
from .compare import compare
from .data import BUILTIN_TEXT, DIGITS, ImageBatches, TextBatches, image_batches, text_batches
from .evaluate import block_ablation, evaluate
from .parent import load_parent
from .plan import DestinationSpec, SubclonePlan, plan, spec_choices
from .profile import profile as profile_parent
from .settings import ProfileSettings
from .shipped import ShippedFigures, available, load_shipped
from .sizing import default_grid_axes, size_grid
from .stability import stability
from .subclone import subclone
from .trace import token_trace

if TYPE_CHECKING:
    from .compare import Comparison
    from .evaluate import BlockAblation
    from .parent import Parent
    from .profile import Profile
    from .sizing import SizeGrid
    from .stability import Stability
    from .trace import TokenTrace

QUICK_ENVIRONMENT_VARIABLE = "SUBCLONE_VIZ_QUICK"
TRACE_TEXT = "Return a new list containing all items from the iterable in ascending order."


# --------------------------------------------------------------------------------------------------------
# How much work


@dataclass(frozen=True)
class Budget:
    """How much work each stage of a job does."""

    seq_len: int  # tokens per text row
    batch_size: int  # rows per text batch
    images_per_batch: int  # for image parents
    profile_tokens: int
    ablation_batches: int
    eval_batches: int  # held-out batches for the untrained losses, the size grid and the training curves
    grid_size: int | None  # keep the largest N values of each default size-grid axis (None: all)
    steps: int  # training steps per initialization
    stability_resamples: int = 16  # resamples of the profile's shards for the calibration-stability section
    stability_losses: int = 3  # of which this many destinations are subcloned and scored


DEFAULT_BUDGET = Budget(
    seq_len=128,
    batch_size=4,
    images_per_batch=64,
    profile_tokens=ProfileSettings().tokens,
    ablation_batches=1,
    eval_batches=2,
    grid_size=None,
    steps=24,
)
QUICK_BUDGET = Budget(
    seq_len=32,
    batch_size=2,
    images_per_batch=16,
    profile_tokens=256,
    ablation_batches=1,
    eval_batches=1,
    grid_size=2,
    steps=2,
    stability_resamples=4,
    stability_losses=1,
)


def quick_mode(quick: bool | None = None) -> bool:
    """``quick`` itself when given; otherwise whether ``SUBCLONE_VIZ_QUICK=1`` is set in the environment."""
    if quick is not None:
        return bool(quick)
    return os.environ.get(QUICK_ENVIRONMENT_VARIABLE) == "1"


def budget(quick: bool | None = None) -> Budget:
    """:data:`QUICK_BUDGET` in quick mode (see :func:`quick_mode`), else :data:`DEFAULT_BUDGET`."""
    return QUICK_BUDGET if quick_mode(quick) else DEFAULT_BUDGET


@dataclass
class MeasuredFigures:
    """A parent's profile and block ablation measured now, for a parent whose figures do not ship."""

    parent: str
    profile: "Profile"
    ablation: "BlockAblation"

    def describe(self) -> str:
        return (
            f"measured now (no shipped figures for {self.parent}): profile of {self.profile.tokens:,} tokens of "
            f"{self.profile.source}, block ablation of its {len(self.ablation.removed)} blocks on held-out text"
        )


def parent_figures(name: str, quick: bool | None = None) -> ShippedFigures | MeasuredFigures:
    """The first figures of a notebook: the shipped profile and block ablation of ``name`` when they ship
    (:func:`~subclone_viz.shipped.available`), else both measured now on the built-in text, which loads the parent
    and takes minutes (its first load converts a GGUF file)."""
    if name in available():
        return load_shipped(name)
    parent = load_parent(name)
    work = budget(quick)
    calibration = parent_batches(parent, "train", tokens=work.profile_tokens, quick=quick)
    heldout = parent_batches(parent, "heldout", max_batches=work.ablation_batches, quick=quick)
    return MeasuredFigures(name, profile_parent(parent, calibration), block_ablation(parent, heldout))


# --------------------------------------------------------------------------------------------------------
# What a parent reads


def reads_text(parent: "Parent") -> bool:
    """True for language models (they read text through a tokenizer), False for image classifiers."""
    return parent.family.task != "image-classification"


def has_loss(parent: "Parent") -> bool:
    """True when the parent has a loss to score and train on (a bare encoder without a head has none)."""
    return parent.family.task != "encoder"


def parent_batches(
    parent: "Parent",
    split: str = "train",
    data: str | os.PathLike | None = None,
    *,
    seq_len: int | None = None,
    batch_size: int | None = None,
    tokens: int | None = None,
    max_batches: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    quick: bool | None = None,
) -> TextBatches | ImageBatches:
    """The batches ``parent`` reads from ``data``: token batches for a language model, images for a vision one.

    Args:
        parent: the loaded parent; its tokenizer reads the text, its input size sizes the images.
        split: ``"train"`` or ``"heldout"``.
        data: a text or image source (see :func:`~subclone_viz.text_batches` and
            :func:`~subclone_viz.image_batches`); None or ``"builtin"``: the embedded data of the parent's
            modality (Python's documentation, or scikit-learn's digits).
        seq_len: tokens per text row (default: the budget's; unused for images).
        batch_size: rows per text batch, or images per batch (default: the budget's).
        tokens: a text budget: enough batches for this many tokens (None: the whole split). Unused for
            images, whose tokens per image (patches and class tokens) depend on the model: ``profile`` stops at
            its own token budget.
        max_batches: at most this many batches (not with ``tokens``).
        shuffle, seed: shuffle the rows (or images) with this seed.
        quick: the budget's quick mode (None: ``SUBCLONE_VIZ_QUICK``).
    """
    if tokens is not None and max_batches is not None:
        raise ValueError(f"give tokens={tokens} or max_batches={max_batches}, not both")
    if tokens is not None and tokens < 1:
        raise ValueError(f"tokens={tokens} is out of range; give a whole number >= 1 (or None: the whole split)")
    sizes = budget(quick)
    if not reads_text(parent):
        return _parent_images(parent, split, data, batch_size or sizes.images_per_batch, max_batches, shuffle, seed)
    if parent.tokenizer is None:
        raise ValueError(
            f"parent {parent.name!r} has no tokenizer to read text with; save one beside the model "
            f"or pass processor= to load_parent"
        )
    seq_len, batch_size = seq_len or sizes.seq_len, batch_size or sizes.batch_size
    if tokens is not None:
        max_batches = math.ceil(tokens / (batch_size * seq_len))
    return text_batches(
        BUILTIN_TEXT if data is None else data,
        parent.tokenizer,
        seq_len=seq_len,
        batch_size=batch_size,
        split=split,
        max_batches=max_batches,
        shuffle=shuffle,
        seed=seed,
    )


def _parent_images(
    parent: "Parent",
    split: str,
    data: str | os.PathLike | None,
    batch_size: int,
    max_batches: int | None,
    shuffle: bool,
    seed: int,
) -> ImageBatches:
    """The image batches of :func:`parent_batches`, at the parent's input size, refused when their channels
    or classes do not fit the parent."""
    source = DIGITS if data is None or data == BUILTIN_TEXT else data
    input_size = parent.processor.get("input_size") if isinstance(parent.processor, Mapping) else None  # (C, H, W)
    batches = image_batches(
        source,
        batch_size=batch_size,
        split=split,
        image_size=input_size[-1] if input_size else None,
        max_batches=max_batches,
        shuffle=shuffle,
        seed=seed,
    )
    if input_size and batches.channels != input_size[0]:
        raise ValueError(
            f"data {str(source)!r} has {batches.channels}-channel images but the parent takes {input_size[0]} "
            f"channels; use an image folder (RGB) or a parent with in_chans={batches.channels}"
        )
    classes = getattr(parent.model, "num_classes", None)  # timm classifiers; 0 for a headless one
    if classes and batches.num_classes > classes:
        raise ValueError(
            f"data {str(source)!r} has {batches.num_classes} classes but the parent's classifier predicts "
            f"{classes}; use a folder of at most {classes} class directories or a parent built with "
            f"num_classes={batches.num_classes}"
        )
    return batches


# --------------------------------------------------------------------------------------------------------
# Destinations


def default_destination(parent: "Parent") -> DestinationSpec:
    """Two thirds of the parent's depth and width (SmolLM2-135M, 30 x 576: 20 blocks x 384), FFN and heads in
    the parent's proportions; the width is the valid one nearest two thirds (the smaller on a tie)."""
    dims = parent.dims
    valid = np.array(spec_choices(parent)["hidden"])  # sorted ascending: argmin takes the smaller on a tie
    hidden = int(valid[np.abs(valid - dims.hidden * 2 / 3).argmin()])
    return DestinationSpec(layers=max(1, round(dims.layers * 2 / 3)), hidden=hidden)


# --------------------------------------------------------------------------------------------------------
# The report's pipeline


class Progress:
    """Stage messages with the elapsed time, on stderr so that stdout stays clean."""

    def __init__(self, name: str = "report") -> None:
        self.name = name
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not distributed.is_main_process():  # under accelerate launch one process reports
            return
        print(f"[{self.name} {time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


class HeldOutTail(list):
    """The last ``count`` batches of a held-out split: scored on, while the profile reads the first ones."""

    def __init__(self, batches: Any, count: int) -> None:
        super().__init__(list(batches)[-count:])
        self.description = f"the last {len(self)} batches of {batches.description}"


@dataclass
class ReportRecords:
    """Everything :func:`report_records` measured; the keyword arguments of :func:`~subclone_viz.report.build_report`."""

    parent: "Parent"
    profile: "Profile"
    plan: SubclonePlan
    ablation: "BlockAblation"
    trace: "TokenTrace"
    grid: "SizeGrid"
    comparison: Any = None  # a Comparison; None when skipped (see notes)
    notes: list[str] = field(default_factory=list)
    stability: "Stability | None" = None  # None when the profile read a single batch (see notes)

    def as_kwargs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def report_records(
    parent: "Parent",
    tokens: int | None = None,
    steps: int | None = None,
    quick: bool | None = None,
    data: str = BUILTIN_TEXT,
    destination: DestinationSpec | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ReportRecords:
    """The main job's measurements: profile, ablate, trace, plan, score untrained, size grid, compare.

    Args:
        parent: the loaded parent.
        tokens: tokens to profile on (default: the budget's, 8192; quick 256).
        steps: training steps per initialization in the comparison (default 24; quick 2). 0 skips it.
        quick: the quick budget (short sequences, single batches, a 2 x 2 size grid, 2 training steps);
            None: ``SUBCLONE_VIZ_QUICK``.
        data: the source (``"builtin"``: Python's documentation, or the digits for an image parent).
        destination: the destination to plan (default :func:`default_destination`).
        seed: the training data order and the random init's seed.
        progress: progress bars.
        log: receives one line per stage (default: :class:`Progress` on stderr).
    """
    sizes = budget(quick)
    profile_tokens = sizes.profile_tokens if tokens is None else tokens
    steps = sizes.steps if steps is None else steps
    log = log or Progress()
    notes: list[str] = []

    heldout = parent_batches(parent, "heldout", data, quick=quick)
    eval_batches = HeldOutTail(heldout, sizes.eval_batches)

    # A shuffled, seeded sample of the training split: every part of the corpus, not its first documents (the
    # README's "Calibration sample" section measures how much that matters).
    train_batches = parent_batches(parent, "train", data, shuffle=True, seed=seed, quick=quick)
    log(f"profiling on {profile_tokens:,} tokens of {train_batches.description}")
    prof = profile_parent(parent, train_batches, max_tokens=profile_tokens, progress=progress)
    ablation, trace = _ablate_and_trace(parent, eval_batches, sizes, progress, log)

    spec = destination or default_destination(parent)
    destination_plan = _untrained_destination(parent, prof, spec, eval_batches, log, notes)
    stable = _calibration_stability(parent, prof, spec, eval_batches, sizes, seed, log, notes)
    grid = _report_grid(parent, prof, eval_batches, sizes, progress, log)
    comparison = _report_comparison(parent, spec, train_batches, eval_batches, prof, steps, seed, progress, log, notes)
    return ReportRecords(
        parent=parent,
        profile=prof,
        plan=destination_plan,
        ablation=ablation,
        trace=trace,
        grid=grid,
        comparison=comparison,
        notes=notes,
        stability=stable,
    )


def _ablate_and_trace(
    parent: "Parent", eval_batches: HeldOutTail, sizes: Budget, progress: bool, log: Callable[[str], None]
) -> tuple[BlockAblation, TokenTrace]:
    """The report's single-block ablation and its one token traced through depth."""
    log(f"single-block ablation ({parent.dims.layers} blocks, removed and duplicated)")
    ablation = block_ablation(parent, eval_batches, max_batches=sizes.ablation_batches, progress=progress)
    if reads_text(parent):
        trace = token_trace(parent, TRACE_TEXT, token_index=-1)
    else:
        trace = token_trace(parent, eval_batches[0], token_index=0)
    return ablation, trace


def _untrained_destination(
    parent: "Parent",
    prof: "Profile",
    spec: DestinationSpec,
    eval_batches: HeldOutTail,
    log: Callable[[str], None],
    notes: list[str],
) -> SubclonePlan:
    """The destination's plan, its untrained held-out loss against the parent's noted in ``notes``."""
    destination_plan = plan(parent, prof, spec)
    log(f"destination: {destination_plan.summary()}")
    untrained = evaluate(subclone(parent, destination_plan), parent.family, eval_batches)
    parent_loss = evaluate(parent.model, parent.family, eval_batches)
    notes.append(
        f"The destination ({destination_plan.dims['layers']} blocks x {destination_plan.dims['hidden']}) starts, "
        f"before any training, at a held-out loss of {untrained.loss:.3f} nats; the parent's is {parent_loss.loss:.3f}."
    )
    return destination_plan


def _calibration_stability(
    parent: "Parent",
    prof: "Profile",
    spec: DestinationSpec,
    eval_batches: HeldOutTail,
    sizes: Budget,
    seed: int,
    log: Callable[[str], None],
    notes: list[str],
) -> Stability | None:
    """The plan's sensitivity to the calibration sample, or None (noted) when the profile has one shard."""
    if (prof.shards["tokens"] > 0).sum() < 2:
        notes.append(
            "The calibration stability section was skipped: the profile read a single batch, so there are "
            "no shards to resample (profile more tokens)."
        )
        return None
    log(
        f"calibration stability: {sizes.stability_resamples} resamples of the profile's shards, "
        f"{sizes.stability_losses} destinations scored"
    )
    return stability(
        parent,
        prof,
        spec,
        resamples=sizes.stability_resamples,
        seed=seed,
        heldout=eval_batches,
        loss_resamples=sizes.stability_losses,
    )


def _report_grid(
    parent: "Parent",
    prof: "Profile",
    eval_batches: HeldOutTail,
    sizes: Budget,
    progress: bool,
    log: Callable[[str], None],
) -> SizeGrid:
    """The size grid over the parent's default axes (their largest ``sizes.grid_size`` values, if set)."""
    layers, hidden = default_grid_axes(parent)
    if sizes.grid_size is not None:
        layers, hidden = layers[-sizes.grid_size :], hidden[-sizes.grid_size :]
    log(f"size grid: {len(layers)} x {len(hidden)} subclones (each cached under the cache directory)")
    grid = size_grid(parent, prof, layers, hidden, eval_batches, progress=progress)
    log(f"size grid: {grid.shape[0]} x {grid.shape[1]} cells, {grid.cache_hits} from the cache")
    return grid


def _report_comparison(
    parent: "Parent",
    spec: DestinationSpec,
    train_batches: TextBatches | ImageBatches,
    eval_batches: HeldOutTail,
    prof: "Profile",
    steps: int,
    seed: int,
    progress: bool,
    log: Callable[[str], None],
    notes: list[str],
) -> "Comparison | None":
    """Random init against the subclone for ``steps`` steps each, or None (noted) when ``steps`` is 0."""
    if steps <= 0:
        notes.append("The training comparison was skipped (steps=0).")
        return None
    log(f"training comparison: random vs subclone, {steps} steps each")
    return compare(
        parent,
        spec,
        train_batches,
        inits=("random", "subclone"),
        steps=steps,
        eval_batches=eval_batches,
        profile=prof,
        seed=seed,
        eval_every=max(1, steps // 4),
        progress=progress,
    )
