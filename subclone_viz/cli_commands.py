"""What the ``subclone-viz`` subcommands do, once :mod:`subclone_viz.cli` has parsed their arguments.

The parser (:mod:`subclone_viz.cli`) knows only argument names, defaults and help, so that ``--help`` never
waits for torch; this module holds the runners, which import the library, and :func:`execute`, which runs one
and reports it: one line on stderr and exit status 2 for a :class:`~subclone_viz.errors.UserError`, the
JSON document or the text on stdout otherwise. Every runner checks all of its arguments before it profiles,
trains or writes anything; a destination spec is checked against the parent's config
(:func:`~subclone_viz.parent.parent_skeleton`) before its weights load.

Example::

    >>> from subclone_viz.cli import build_parser
    >>> from subclone_viz.cli_commands import execute
    >>> args = build_parser().parse_args(["subclone", "--parent", "smollm2-135m", "--layers", "7", "--hidden",
    ...                                   "1000", "--out", "child"])
    >>> import contextlib, sys
    >>> with contextlib.redirect_stderr(sys.stdout):  # the error goes to stderr; shown here
    ...     execute(args, "subclone-viz")               # refused from the config alone: no weights load
    subclone-viz: error: hidden=1000 is out of range: choose 1 <= hidden <= 576 (the parent's)
    2
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from ._atomic import check_new_directory, check_new_file, staged_directory
from .budget import BudgetGrid, budget_grid
from .choices import PILOT_FRACTION
from .compare import CONVERGED_SECOND_HALF_SHARE, INITS, Comparison, compare, speedup_text
from .data import ImageBatches, TextBatches
from .errors import UserError
from .evaluate import block_ablation, evaluate
from .export import save_destination
from .forecast import ForecastPrior, LearningCurve, forecast
from .importance import ESTIMATORS
from .lens import logit_lens
from .parent import Parent, load_parent, parent_skeleton
from .plan import (
    DEPTH_STRATEGIES,
    DEPTHS,
    SCALING_METHODS,
    SCALINGS,
    WIDTH_STRATEGIES,
    WIDTHS,
    DestinationSpec,
    check_spec,
    plan,
    spec_choices,
)
from .profile import BLOCK_METRIC_LABELS, BLOCK_METRICS, Profile, add_taylor, profile
from .similarity import layer_similarity
from .sizing import default_grid_axes, size_grid
from .study import SpeedupStudy, best_lr_text, speedup_study
from .subclone import subclone
from .train import History
from .vision import VIT_DIGITS  # noqa: F401  (importing vision registers the vit-digits parent source)
from .workflow import Progress, ReportRecords, has_loss, parent_batches, quick_mode, report_records


class UsageError(UserError):
    """A mistake in what the user asked for: reported as one line on stderr, exit status 2."""


@dataclass
class Outcome:
    """What a subcommand reports: the JSON document for ``--json`` and the same facts as text for people."""

    document: dict[str, Any]
    text: str


@contextlib.contextmanager
def _blame_user(*extra: type[BaseException]) -> Iterator[None]:
    """Treat ValueError and OSError (and ``extra``) raised while reading what the user named as their mistake.

    Only wrapped around loading their parent, data and files: elsewhere a ValueError is a bug and keeps its
    traceback.
    """
    try:
        yield
    except (ValueError, OSError, *extra) as error:
        raise UsageError(str(error)) from error


def _note(message: str) -> None:
    """A progress note for people; stderr, so that ``--json`` output stays one document. Main process only."""
    if distributed.is_main_process():
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# Shared steps


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" bar: before the arguments are all checked, an error must be stderr's only line."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(args: argparse.Namespace) -> Parent:
    torch.manual_seed(args.seed)
    with _blame_user(), _quiet_transformers():
        return load_parent(
            args.parent,
            device=args.device,
            dtype=args.dtype,
            device_map=args.device_map,
            offload_folder=args.offload_folder,
        )


def _load_trainable(args: argparse.Namespace) -> Parent:
    """The parent, which must have a loss to train a destination on."""
    parent = _load(args)
    if not has_loss(parent):
        raise UsageError(
            f"parent {args.parent!r} is an encoder without a language-model head: it has no loss to "
            f"train on; use a causal LM, a masked LM or an image classifier"
        )
    return parent


def _saved_profile(args: argparse.Namespace, parent: Parent) -> Profile | None:
    """``--profile`` read back and checked against the parent (None when not given)."""
    if args.profile is None:
        return None
    with _blame_user():
        saved = Profile.load(args.profile)
    saved.check_parent(parent)
    return saved


def _batches(
    parent: Parent, args: argparse.Namespace, split: str, tokens: int | None, shuffle: bool = False
) -> TextBatches | ImageBatches:
    """``--data`` batches of ``split`` for this parent (:func:`~subclone_viz.workflow.parent_batches`): text
    enough for ``tokens`` tokens (None: all of it), images the whole split."""
    with _blame_user(ImportError):
        return parent_batches(
            parent,
            split,
            args.data,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            tokens=tokens,
            shuffle=shuffle,
            seed=args.seed,
        )


def _check_new_file(path: Path, suffixes: tuple[str, ...], overwrite: bool) -> None:
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"--out {path} must end in {' or '.join(suffixes)}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--out {path} exists and is not a file")
    if path.exists() and not overwrite:
        raise UsageError(f"--out {path} exists; pass --overwrite to replace it")
    check_new_file(path, overwrite)  # a place where no file can be created


def _numbers(values: Sequence[int]) -> str:
    """Compact text for a sorted list of valid integers: ``1-576``, ``64, 128, ..., 576 (step 64)``, ``3, 6, 9``."""
    values = list(values)
    steps = set(np.diff(values).tolist())
    if len(values) > 4 and steps == {1}:
        return f"{values[0]}-{values[-1]}"
    if len(values) > 6 and len(steps) == 1:
        return f"{values[0]}, {values[1]}, ..., {values[-1]} (step {steps.pop()})"
    return ", ".join(map(str, values))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Right-aligned columns; floats with 4 decimals."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# Subcommands


def run_info(args: argparse.Namespace) -> Outcome:
    """The parent's description and the valid value of every destination spec field."""
    parent = _load(args)
    dims = parent.dims
    choices = spec_choices(parent)
    document = {
        "parent": parent.name,
        "description": parent.description,
        "family": parent.family.name,
        "task": parent.family.task,
        "dims": dims.to_dict(),
        "parameters": sum(p.numel() for p in parent.model.parameters()),
        "choices": choices,
        "depth": list(DEPTH_STRATEGIES),
        "width": list(WIDTH_STRATEGIES),
        "scaling": list(SCALINGS),
    }
    heads_note = (
        f" (heads = hidden / {dims.head_dim} in this family)"
        if parent.family.heads_follow_hidden
        else f" (multiples of its {dims.queries_per_kv} queries per KV head)"
        if dims.queries_per_kv > 1
        else ""
    )
    text = "\n".join(
        [
            f"{parent.name}: {parent.description}",
            f"task: {parent.family.task}",
            "valid destination specs:",
            f"  --layers    {_numbers(choices['layers'])} (more than {dims.layers} duplicates middle blocks), "
            f"or a comma list of parent blocks 0-{dims.layers - 1}",
            f"  --hidden    {_numbers(choices['hidden'])}",
            f"  --ffn       {_numbers(choices['ffn'])}",
            f"  --heads     {_numbers(choices['heads'])}{heads_note}",
            f"  --kv-heads  {_numbers(choices['kv_heads'])}",
            f"  --depth     {' | '.join(DEPTH_STRATEGIES)} | a comma list of parent blocks",
            f"  --width     {' | '.join(WIDTH_STRATEGIES)}",
            f"  --scaling   {' | '.join(SCALINGS)}",
        ]
    )
    return Outcome(document, text)


def run_profile(args: argparse.Namespace) -> Outcome:
    """Profile the parent on ``--data`` and print the per-block metrics and the rank consistency."""
    if args.out is not None:
        _check_new_file(args.out, (".npz",), args.overwrite)
    parent = _load(args)
    batches = _batches(parent, args, args.split, args.tokens, shuffle=True)  # document-diverse, seeded by --seed
    _note(f"profiling on {batches.description} ...")
    result = profile(parent, batches, max_tokens=args.tokens)
    if args.out is not None:
        result.save(args.out, overwrite=args.overwrite)
    document = {**result.summary(), "output": str(args.out) if args.out is not None else None}
    return Outcome(document, _profile_text(result, args.out))


def _profile_text(result: Profile, out: Path | None) -> str:
    metrics = result.block_metrics
    rows = [[block, *(float(metrics[name][block]) for name in BLOCK_METRICS)] for block in range(result.num_layers)]
    consistency = result.rank_consistency()
    adjacent = consistency.adjacent_spearman()  # (L,): block i's input against its output
    overlap = np.diag(consistency.topk_overlap, 1)  # (L,)
    best, worst = int(np.argmax(adjacent)), int(np.argmin(adjacent))
    width = result.residual_importance.shape[1]
    lines = [
        f"{result.parent['name']}: {result.parent.get('description', '')}",
        f"profiled on {result.tokens:,} tokens of {result.source}",
        "",
        _table(["block", *(BLOCK_METRIC_LABELS[name] for name in BLOCK_METRICS)], rows),
        "",
        f"rank consistency of residual-channel importance (top-k: {consistency.k} of {width} channels):",
        f"  median adjacent-layer Spearman {np.median(adjacent):.4f}, median adjacent top-k overlap "
        f"{np.median(overlap):.4f}",
        f"  most consistent: block {best} (its input vs its output: Spearman {adjacent[best]:.4f}, "
        f"top-k overlap {overlap[best]:.4f})",
        f"  least consistent: block {worst} (Spearman {adjacent[worst]:.4f}, top-k overlap {overlap[worst]:.4f})",
    ]
    if out is not None:
        lines.append(f"saved to {out}")
    return "\n".join(lines)


def _spec(args: argparse.Namespace) -> DestinationSpec:
    layers, depth = args.layers, getattr(args, "depth", "middle")
    if layers is None:
        if isinstance(depth, str):
            raise UsageError("--layers is missing: give a block count or a comma list of parent blocks")
        layers = len(depth)
    if args.hidden is None:
        raise UsageError("--hidden is missing: give the destination's residual width with --layers")
    return DestinationSpec(layers=layers, hidden=args.hidden, ffn=args.ffn, heads=args.heads, kv_heads=args.kv_heads)


def _check_plan(parent: Parent, spec: DestinationSpec, depth: str | list[int]) -> None:
    """Raise the SpecError that ``plan`` would, before any profiling (:func:`~subclone_viz.plan.check_spec`: the
    parent's shape only, so ``parent`` may be a :func:`~subclone_viz.parent.parent_skeleton`)."""
    check_spec(parent, spec, depth)


def _check_before_loading(args: argparse.Namespace, specs: Sequence[DestinationSpec], depth: str | list[int]) -> None:
    """Check the destination specs against the parent's config alone (:func:`~subclone_viz.parent.parent_skeleton`),
    so that a spec that cannot fit fails before seconds of loading weights. Parents whose shape only loading
    tells are checked once loaded, by the same :func:`_check_plan`."""
    with _blame_user():
        skeleton = parent_skeleton(args.parent)
    if skeleton is not None:
        for spec in specs:
            _check_plan(skeleton, spec, depth)


def _check_names(args: argparse.Namespace) -> None:
    """``--depth``, ``--width``, ``--scaling`` and ``--importance`` name registered strategies and estimators
    (plugins' too: the parser lists only the built-in ones)."""
    named = [
        ("--depth", args.depth, DEPTHS),
        ("--width", args.width, WIDTHS),
        ("--scaling", args.scaling, SCALING_METHODS),
        ("--importance", args.importance, ESTIMATORS),
    ]
    for option, name, registry in named:
        if isinstance(name, str) and name not in registry:
            close = difflib.get_close_matches(name, list(registry), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"argument {option}: invalid choice: {name!r}{hint}; choose from "
                f"{', '.join(map(repr, registry))}"
                + (" or a comma list of parent blocks" if option == "--depth" else "")
            )


def run_subclone(args: argparse.Namespace) -> Outcome:
    """Plan, subclone, score on held-out data and save a destination."""
    check_new_directory(args.out, args.overwrite)
    if args.profile is not None and not args.profile.is_file():
        raise UsageError(f"--profile {args.profile}: no such file")
    _check_names(args)
    spec = _spec(args)
    _check_before_loading(args, [spec], args.depth)
    parent = _load(args)
    _check_plan(parent, spec, args.depth)
    train, measured = _subclone_profile(args, parent)
    heldout = _batches(parent, args, "heldout", args.eval_tokens) if args.eval_tokens and has_loss(parent) else None
    destination_plan = plan(
        parent, measured, spec, depth=args.depth, width=args.width, scaling=args.scaling, importance=args.importance
    )
    destination = subclone(parent, destination_plan, calibration_batches=train)
    scores = None
    if heldout is not None:
        _note(f"scoring on {heldout.description} ...")
        scores = {
            "data": heldout.description,
            "parent_loss": evaluate(parent.model, parent.family, heldout).loss,
            "destination_loss": evaluate(destination, parent.family, heldout).loss,
        }
    path = save_destination(destination, destination_plan, args.out, overwrite=args.overwrite)
    return _subclone_outcome(args, parent, destination, destination_plan, measured, scores, path)


def _subclone_profile(
    args: argparse.Namespace, parent: Parent
) -> tuple[TextBatches | ImageBatches | None, Profile | None]:
    """The training batches (None where the plan needs none) and the profile the plan ranks by: ``--profile``,
    or measured on ``--profile-tokens`` of the data (with its Taylor pass for ``--importance taylor``)."""
    needs_profile = args.width == "importance" or args.depth == "metric"
    measured = _saved_profile(args, parent)
    needs_taylor = (
        args.width == "importance"
        and args.importance == "taylor"
        and (measured is None or "taylor_ffn" not in measured.stats)
    )
    if not ((needs_profile and measured is None) or args.scaling == "calibrated" or needs_taylor):
        return None, measured
    train = _batches(parent, args, "train", args.profile_tokens, shuffle=True)
    if measured is None and needs_profile:
        _note(f"profiling on {train.description} ...")
        measured = profile(parent, train, max_tokens=args.profile_tokens)
    if needs_taylor:
        _note(f"gradient pass for the Taylor importance on {train.description} ...")
        measured = add_taylor(measured, parent, train, max_tokens=args.profile_tokens)
    return train, measured


def _subclone_outcome(
    args: argparse.Namespace,
    parent: Parent,
    destination: torch.nn.Module,
    destination_plan: Any,
    measured: Profile | None,
    scores: dict[str, Any] | None,
    path: Path,
) -> Outcome:
    parameters = sum(p.numel() for p in destination.parameters())
    parent_parameters = sum(p.numel() for p in parent.model.parameters())
    source = None if measured is None else {"source": measured.source, "tokens": measured.tokens}
    document = {
        "parent": parent.name,
        "plan": destination_plan.summary(),
        **{
            key: getattr(destination_plan, key) for key in ("dims", "layers", "depth", "width", "importance", "scaling")
        },
        "parameters": parameters,
        "parent_parameters": parent_parameters,
        "profile": None if source is None else {**source, "path": None if args.profile is None else str(args.profile)},
        "heldout": scores,
        "output": str(path),
    }
    profiled = "none (data-free plan)"
    if measured is not None:
        profiled = f"{measured.tokens:,} tokens of {measured.source}" + (
            f" ({args.profile})" if args.profile is not None else ""
        )
    lines = [
        f"plan: {destination_plan.summary()}",
        f"parameters: {parameters / 1e6:.2f}M ({parameters / parent_parameters:.1%} of the parent's "
        f"{parent_parameters / 1e6:.2f}M)",
        f"profile: {profiled}",
    ]
    if scores is not None:
        lines.append(
            f"held-out loss before training: {scores['destination_loss']:.4f} (parent {scores['parent_loss']:.4f}) "
            f"on {scores['data']}"
        )
    elif not has_loss(parent):
        lines.append("held-out loss: not scored (the parent is an encoder without a language-model head)")
    lines.append(f"saved to {path}")
    return Outcome(document, "\n".join(lines))


def run_ablate(args: argparse.Namespace) -> Outcome:
    """The parent's held-out loss with each single block removed, and duplicated (paper Fig. 2, bottom)."""
    parent = _load(args)
    if not has_loss(parent):
        raise UsageError(
            f"parent {args.parent!r} is an encoder without a language-model head, so it has no loss to ablate; "
            f"use a causal LM, a masked LM or an image classifier"
        )
    heldout = _batches(parent, args, "heldout", args.tokens)
    _note(f"ablating {parent.dims.layers} blocks on {heldout.description} ...")
    result = block_ablation(parent, heldout)
    document = {"parent": parent.name, "data": heldout.description, **result.to_dict()}
    rows = [
        [block, removed, removed - result.baseline, duplicated, duplicated - result.baseline]
        for block, (removed, duplicated) in enumerate(zip(result.removed, result.duplicated))
    ]
    text = "\n".join(
        [
            f"{parent.name}: held-out loss {result.baseline:.4f} on {heldout.description}",
            "",
            _table(["block", "removed", "change", "duplicated", "change"], rows),
        ]
    )
    return Outcome(document, text)


def _per_init(values: list[tuple[str | None, float]], inits: list[str], option: str) -> dict[str, float]:
    """``--lr``/``--weight-decay`` values as {init: value}; a bare VALUE applies to every init."""
    chosen: dict[str, float] = {}
    for init, value in values:
        if init is not None and init not in inits:
            raise UsageError(f"{option} {init}={value:g} names an init that is not in --inits {','.join(inits)}")
        chosen.update({init: value} if init is not None else dict.fromkeys(inits, value))
    return chosen


def _convergence_note(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The footnote of the speedups marked ``*`` (none when random init had converged)."""
    if not any(row.get("reference_converged") is False for row in rows):
        return []
    return [
        f"* at this budget only: random init had not converged (the second half of its run brought more than "
        f"{CONVERGED_SECOND_HALF_SHARE:.0%} of its drop in held-out loss), so a longer run may give another "
        f"speedup"
    ]


def _beyond_budget_note(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Where random init would reach another init's final loss only beyond the budget: forecasts."""
    if not rows:
        return []
    lines = ["", "beyond the budget (forecast from random init's whole run, its schedule stretched):"]
    for row in rows:
        seed = "" if row["seed"] is None else f" seed {row['seed']}"
        lines.append(f"  {row['destination']}{seed}, {row['init']}'s final loss: {row['text']}")
    return lines


def run_compare(args: argparse.Namespace) -> Outcome:
    """Train the same destination from each ``--inits`` initialization; save histories, summary and plots."""
    lrs, weight_decays, distill_options = _compare_options(args)
    spec = _spec(args)
    _check_before_loading(args, [spec], "middle")
    parent = _load_trainable(args)
    _check_plan(parent, spec, "middle")
    saved_profile = _saved_profile(args, parent)
    train = _batches(parent, args, "train", None, shuffle=True)
    heldout = _batches(parent, args, "heldout", args.eval_tokens)

    _note(f"training {', '.join(args.inits)} for {args.steps} steps each on {train.description} ...")
    comparison = compare(
        parent,
        spec,
        train,
        inits=args.inits,
        steps=args.steps,
        eval_batches=heldout,
        profile=saved_profile,
        lrs=lrs,
        weight_decays=weight_decays,
        seed=args.seed,
        warmup=args.warmup,
        schedule=args.schedule,
        eval_every=args.eval_every,
        lr_preset=args.lr_preset,
        **distill_options,
    )
    files = _save_comparison(comparison, args.out, args.overwrite)
    return _compare_outcome(args, parent.name, comparison, train.description, heldout.description, files)


def _compare_options(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """``compare``'s checks that need no parent, and its per-init rates, weight decays and distillation options."""
    check_new_directory(args.out, args.overwrite)
    if args.profile is not None and not args.profile.is_file():
        raise UsageError(f"--profile {args.profile}: no such file")
    if args.warmup is not None and args.warmup > args.steps:
        raise UsageError(f"--warmup {args.warmup} is out of range: choose 0 <= warmup <= --steps {args.steps}")
    lrs = _per_init(args.lr, args.inits, "--lr")
    weight_decays = _per_init(args.weight_decay, args.inits, "--weight-decay")
    distill_options: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("distill_alpha", "distill_temperature")
        if getattr(args, name) is not None
    }
    distilled = [init for init in args.inits if INITS[init].distill]
    if distill_options and not distilled:
        given = " and ".join(f"--{name.replace('_', '-')}" for name in distill_options)
        with_teacher = ", ".join(init for init in INITS if INITS[init].distill)
        raise UsageError(
            f"{given} only apply to inits trained with the parent as teacher ({with_teacher}); "
            f"--inits {','.join(args.inits)} has none"
        )
    return lrs, weight_decays, distill_options


def _compare_outcome(
    args: argparse.Namespace, parent_name: str, comparison: Comparison, data: str, heldout: str, files: list[str]
) -> Outcome:
    table = comparison.summary_table()
    rows = [
        [
            row["init"],
            f"{row['lr']:g}",
            f"{row['weight_decay']:g}",
            row["steps"],
            row["initial_loss"],
            row["final_loss"],
            speedup_text(row, compact=True),
            speedup_text(row, "speedup_per_second", compact=True),
            f"{row['train_seconds']:.1f}",
        ]
        for row in table
    ]
    destination = comparison.config["destination"]
    shape = f"{destination['layers']} layers x hidden {destination['hidden']}, FFN {destination['ffn']}"
    lines = [
        f"{parent_name} -> {shape}: {args.steps} steps per init on {data}",
        f"held-out loss on {heldout}; speedup: steps random needs to reach its final held-out loss "
        f"over the steps each init needs; speedup/s: the same in seconds of training (a teacher costs time)",
        comparison.lr_note(),
        "",
        _table(["init", "lr", "wd", "steps", "initial loss", "final loss", "speedup", "speedup/s", "train s"], rows),
        *_convergence_note(table),
        "",
        f"saved to {args.out}: {', '.join(files)}",
    ]
    if comparison.stopped_early:
        lines.insert(0, "stopped early: the table shows the runs so far")
    document = {
        "parent": parent_name,
        "destination": destination,
        "steps": args.steps,
        "data": data,
        "heldout": heldout,
        "table": table,
        "stopped_early": comparison.stopped_early,
        "lr_preset": args.lr_preset,
        "learning_rates": comparison.config["learning_rates"],
        "output": str(args.out),
        "files": files,
    }
    return Outcome(document, "\n".join(lines))


def _save_comparison(comparison: Comparison, directory: Path, overwrite: bool) -> list[str]:
    """Histories (CSV + JSON), summary, a PNG and a self-contained HTML plot of the held-out loss, all at once.

    The figures are drawn before anything is written, and everything goes into a staging directory that is
    renamed into place, so a failure leaves no half-written run. Under several processes the main one writes.
    """
    return distributed.on_main(_write_comparison, comparison, directory, overwrite)


def _write_comparison(comparison: Comparison, directory: Path, overwrite: bool) -> list[str]:
    from . import plots

    static = plots.loss_curves(comparison.histories, backend="matplotlib")
    png = io.BytesIO()
    static.savefig(png, format="png", dpi=120, bbox_inches="tight")
    page = plots.loss_curves(comparison.histories, backend="plotly").to_html(full_html=True, include_plotlyjs=True)

    with staged_directory(directory, overwrite) as staging:
        comparison.write_files(staging)
        (staging / "loss_curves.png").write_bytes(png.getvalue())
        (staging / "loss_curves.html").write_text(page, encoding="utf-8")
        files = sorted(path.name for path in staging.iterdir())
    return files


def run_study(args: argparse.Namespace) -> Outcome:
    """Train every size from random init and from the subclone at their best learning rates (or merge saved
    studies); save the study, a PNG and a self-contained HTML figure of speedup against size."""
    check_new_directory(args.out, args.overwrite)
    if args.merge:
        if args.sizes is not None:
            raise UsageError("--merge combines saved studies: give it without --sizes")
        with _blame_user():
            study = SpeedupStudy.merge([SpeedupStudy.load(path) for path in args.merge])
        parent_name = study.config["parent"]["name"]  # SpeedupStudy.load checked it is there
    else:
        study, parent_name = _train_study(args)
    files = distributed.on_main(_write_study, study, args.out, args.overwrite)
    table, beyond = study.table(), study.beyond_budget()
    rows = [
        [
            row["destination"],
            f"{row['parameters'] / 1e6:.1f}M",
            row["init"],
            best_lr_text(row),
            row["initial_loss"],
            row["final_loss"],
            speedup_text(row, compact=True),
            speedup_text(row, "speedup_per_second", compact=True),
        ]
        for row in table
    ]
    text = "\n".join(
        [
            f"{parent_name}: {study.config.get('steps')} steps per run; speedup: steps the best random run needs to reach "
            f"its final held-out loss over the steps each init needs (speedup/s: in seconds of training)",
            "",
            _table(
                ["destination", "params", "init", "best lr", "initial loss", "final loss", "speedup", "speedup/s"], rows
            ),
            *_convergence_note(table),
            *_beyond_budget_note(beyond),
            "",
            f"saved to {args.out}: {', '.join(files)}",
        ]
    )
    document = {
        "parent": parent_name,
        "config": study.config,
        "table": table,
        "beyond_budget": beyond,
        "output": str(args.out),
        "files": files,
    }
    return Outcome(document, text)


def _train_study(args: argparse.Namespace) -> tuple[SpeedupStudy, str]:
    """The study of ``--sizes``, every argument checked before the parent loads; and the parent's name."""
    if args.sizes is None:
        raise UsageError("--sizes is missing: give destination sizes such as 24x480,20x384,8x288 (or --merge)")
    extra = [size for size in args.distill_sizes if size not in args.sizes]
    if extra:
        raise UsageError(f"--distill-sizes {','.join(f'{l}x{h}' for l, h in extra)} are not among --sizes")
    if args.distill_sizes and not args.subclone_lrs:
        raise UsageError(
            "--distill-sizes trains from the subclone's best rate: give --subclone-lrs, or --distill-sizes ''"
        )
    if args.profile is not None and not args.profile.is_file():
        raise UsageError(f"--profile {args.profile}: no such file")
    specs = {size: DestinationSpec(layers=size[0], hidden=size[1]) for size in args.sizes}
    _check_before_loading(args, list(specs.values()), "middle")
    parent = _load_trainable(args)
    for spec in specs.values():
        _check_plan(parent, spec, "middle")
    saved_profile = _saved_profile(args, parent)
    train = _batches(parent, args, "train", None, shuffle=True)
    heldout = _batches(parent, args, "heldout", args.eval_tokens)
    runs = len(args.sizes) * (len(args.random_lrs) + len(args.subclone_lrs))
    runs += len(args.distill_sizes) * len(args.distill_inits)
    _note(f"training {runs} runs of {args.steps} steps on {train.description} ...")
    study = speedup_study(
        parent,
        list(specs.values()),
        train,
        heldout,
        profile=saved_profile,
        random_lrs=args.random_lrs,
        subclone_lrs=args.subclone_lrs,
        distill_sizes=[specs[size] for size in args.distill_sizes],
        distill_inits=args.distill_inits if args.distill_sizes else [],
        steps=args.steps,
        eval_every=args.eval_every,
        seed=args.seed,
        log=_note,
    )
    return study, parent.name


def _write_study(study: SpeedupStudy, directory: Path, overwrite: bool) -> list[str]:
    """study.json, speedup_by_size.png and a self-contained speedup_by_size.html, all at once (staged)."""
    from . import plots

    static = plots.speedup_by_size(study.sizes, backend="matplotlib")
    png = io.BytesIO()
    static.savefig(png, format="png", dpi=120, bbox_inches="tight")
    page = plots.speedup_by_size(study.sizes).to_html(full_html=True, include_plotlyjs=True)
    with staged_directory(directory, overwrite) as staging:
        (staging / "study.json").write_text(study.to_json())
        (staging / "speedup_by_size.png").write_bytes(png.getvalue())
        (staging / "speedup_by_size.html").write_text(page, encoding="utf-8")
        return sorted(path.name for path in staging.iterdir())


def run_report(args: argparse.Namespace) -> Outcome:
    """The main job: one self-contained HTML page (:func:`subclone_viz.report.run_report`'s measurements), with
    the "what the cut loses" section unless ``--no-cut``."""
    from .report import build_report

    _check_new_file(args.out, (".html", ".htm"), args.overwrite)
    study = SpeedupStudy.load(args.speedup_study) if args.speedup_study is not None else None
    budget = BudgetGrid.load(args.budget_grid) if args.budget_grid is not None else None
    destination = _spec(args) if args.layers is not None or args.hidden is not None else None
    if destination is not None:
        _check_before_loading(args, [destination], "middle")
    parent = _load(args)
    if destination is not None:
        _check_plan(parent, destination, "middle")
    with _blame_user(ImportError):
        parent_batches(parent, "heldout", args.data, max_batches=1)  # a bad --data (or no tokenizer) fails now
    quick = quick_mode(args.quick or None)
    log = Progress("report")
    log(f"parent: {parent.description}")
    records = report_records(
        parent,
        tokens=args.tokens,
        steps=args.steps,
        quick=quick,
        data=args.data,
        destination=destination,
        seed=args.seed,
        log=log,
    )
    cut = {} if args.no_cut else _cut_records(parent, records, args.data, quick, log)
    path = build_report(
        **records.as_kwargs(), **cut, out=args.out, overwrite=args.overwrite, study=study, budget=budget
    )
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    document = {
        "parent": parent.name,
        "output": str(path),
        "bytes": path.stat().st_size,
        "quick": quick,
        "cut_section": bool(cut),
    }
    return Outcome(
        document, f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no network needed"
    )


def _cut_records(
    parent: Parent, records: ReportRecords, data: str, quick: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    """The report's "what the cut loses" records: the logit lens of the parent and of its untrained destination
    (the report's plan) on one held-out row, and their layer similarity on its batch. A parent without a head to
    read the lens through gets a note instead."""
    if not has_loss(parent):
        records.notes.append("The 'what the cut loses' section was skipped: the parent has no head to read through.")
        return {}
    batch = next(iter(parent_batches(parent, "heldout", data, quick=quick, max_batches=1)))
    # The lens projects every layer onto the whole vocabulary: one row of the batch keeps it to seconds.
    row = {key: value[:1] for key, value in batch.items()}
    log("what the cut loses: logit lens of parent and destination (one row), layer similarity (one batch)")
    destination = subclone(parent, records.plan)
    lenses = {
        "parent": logit_lens(parent, None, row, name="parent"),
        "destination": logit_lens(destination, None, row, plan=records.plan, name="destination"),
    }
    similarity = layer_similarity(parent, destination, records.plan, [batch])
    return {"lenses": lenses, "similarities": {"untrained destination": similarity}}


def run_grid(args: argparse.Namespace) -> Outcome:
    """Every (layers x hidden) subclone's size, cost and untrained loss (:func:`~subclone_viz.sizing.size_grid`),
    or with a budget its forecast loss after that much training (:func:`~subclone_viz.budget.budget_grid`);
    the record and its Pareto figure saved together."""
    budgeted = args.budget_tokens is not None or args.budget_flops is not None
    _check_grid(args, budgeted)
    parent = _load(args)
    if budgeted and not has_loss(parent):
        raise UsageError(f"parent {args.parent!r} has no loss to train on: a budget grid trains pilots")
    if args.layers is None or args.hidden is None:
        default_layers, default_hidden = default_grid_axes(parent)
        args.layers, args.hidden = args.layers or default_layers, args.hidden or default_hidden
    saved = _saved_profile(args, parent)
    train = _batches(parent, args, "train", args.profile_tokens if not budgeted else None, shuffle=True)
    heldout = list(_batches(parent, args, "heldout", args.eval_tokens))
    measured = saved
    if measured is None:
        _note(f"profiling on {train.description} ...")
        measured = profile(parent, train, max_tokens=args.profile_tokens)
    cells = len(args.layers) * len(args.hidden)
    if budgeted:
        inits = args.inits or ["subclone"]
        _note(f"piloting {cells} sizes x {len(inits)} inits on {train.description} ...")
        grid: Any = budget_grid(
            parent,
            measured,
            args.layers,
            args.hidden,
            train,
            heldout,
            tokens=args.budget_tokens,
            flops=args.budget_flops,
            pilot_fraction=args.pilot_fraction or PILOT_FRACTION,
            inits=inits,
        )
    else:
        _note(f"subcloning and scoring {cells} sizes on {len(heldout)} held-out batches ...")
        grid = size_grid(parent, measured, args.layers, args.hidden, heldout)
    files = distributed.on_main(_write_grid, grid, args.out, args.overwrite)
    return _grid_outcome(args, parent.name, grid, files)


def _check_grid(args: argparse.Namespace, budgeted: bool) -> None:
    """``grid``'s arguments that need no parent: the budget's companions only with a budget, a new --out."""
    check_new_directory(args.out, args.overwrite)
    if not budgeted:
        given = [flag for flag, value in (("--pilot-fraction", args.pilot_fraction), ("--inits", args.inits)) if value]
        if given:
            raise UsageError(
                f"{' and '.join(given)} only apply with a budget: add --budget-tokens N or --budget-flops F"
            )
    if args.profile is not None and not args.profile.is_file():
        raise UsageError(f"--profile {args.profile}: no such file")


def _write_grid(grid: Any, directory: Path, overwrite: bool) -> list[str]:
    """The grid's record and its Pareto figure as PNG and self-contained HTML, all at once (staged)."""
    from . import plots

    budgeted = isinstance(grid, BudgetGrid)
    name, draw = ("budget", plots.budget_pareto) if budgeted else ("size", plots.size_pareto)
    static: Any = draw(grid, backend="matplotlib")
    png = io.BytesIO()
    static.savefig(png, format="png", dpi=120, bbox_inches="tight")
    interactive: Any = draw(grid)
    page = interactive.to_html(full_html=True, include_plotlyjs=True)
    with staged_directory(directory, overwrite) as staging:
        (staging / f"{name}_grid.json").write_text(grid.to_json())
        (staging / f"{name}_pareto.png").write_bytes(png.getvalue())
        (staging / f"{name}_pareto.html").write_text(page, encoding="utf-8")
        return sorted(path.name for path in staging.iterdir())


def _grid_outcome(args: argparse.Namespace, parent_name: str, grid: Any, files: list[str]) -> Outcome:
    if isinstance(grid, BudgetGrid):
        budget = f"{grid.tokens:,.0f} tokens" if grid.tokens is not None else f"{grid.flops:.3g} FLOPs"
        header = f"{parent_name}: held-out loss forecast at {budget} from pilots (80% interval)"
        rows = [
            [
                row["size"],
                row["init"],
                f"{row['params'] / 1e6:.2f}M",
                row["steps"],
                row["loss"],
                row["low"],
                row["high"],
            ]
            for row in grid.table()
        ]
        table = _table(["size", "init", "params", "steps", "forecast", "low", "high"], rows)
        document = {"parent": parent_name, "budget_grid": grid.to_dict(), "best": grid.best()}
    else:
        header = (
            f"{parent_name}: held-out loss of untrained subclones; * on the Pareto front of loss against parameters"
        )
        front = grid.pareto_front("params")
        rows = [
            [
                f"{layers} x {hidden}",
                f"{grid.params[i, j] / 1e6:.2f}M",
                float(grid.loss[i, j]),
                "*" if front[i, j] else "",
            ]
            for i, layers in enumerate(grid.layers)
            for j, hidden in enumerate(grid.hidden)
            if np.isfinite(grid.loss[i, j])
        ]
        table = _table(["size", "params", "untrained loss", "front"], rows)
        document = {"parent": parent_name, "size_grid": grid.to_dict()}
    document.update({"output": str(args.out), "files": files})
    return Outcome(document, "\n".join([header, "", table, "", f"saved to {args.out}: {', '.join(files)}"]))


# --------------------------------------------------------------------------------------------------------
# Running one subcommand


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def execute(args: argparse.Namespace, prog: str) -> int:
    """Run the subcommand ``args`` was parsed for (its runner is ``args.run``) and report it as the program
    ``prog``; the exit status."""
    stdout = sys.stdout
    run: Callable[[argparse.Namespace], Outcome] = args.run
    try:
        # Anything a library prints goes to stderr, so that --json output stays one document.
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            outcome = run(args)
    except UserError as error:  # the library raises these for what the user can fix; never bugs
        if distributed.is_main_process():
            print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    # Under accelerate launch every process ran the command; the main one reports it.
    if distributed.is_main_process():
        print(json.dumps(outcome.document, indent=2) if args.json else outcome.text, file=stdout, flush=True)
    return 0


def _forecast_curve(args: argparse.Namespace) -> Any:
    """The run's LearningCurve from a history .json or a .csv log, every argument checked first."""
    path = args.run_file.expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise UsageError(f"RUN={path}: give a training history .json or a .csv log")
    if not path.is_file():
        raise UsageError(f"RUN={path}: no such file")
    if suffix == ".json":
        extra = [f for f in ("lr_column", "schedule", "total_steps", "tokens_per_step") if getattr(args, f)]
        if extra:
            raise UsageError(f"--{extra[0].replace('_', '-')} is for .csv logs; a history carries its own schedule")
        return History.load(path).curve(parameters=args.parameters)
    if (args.lr_column is None) == (args.schedule is None):
        raise UsageError("a .csv log needs --lr-column (the rate of every step) or --schedule with --total-steps")
    if args.schedule is not None and args.total_steps is None:
        raise UsageError(f"--schedule {args.schedule} needs --total-steps (the run's planned length)")
    bad = [w for w in args.where if "=" not in w or not w.split("=", 1)[0]]
    if bad:
        raise UsageError(f"--where {bad[0]!r}: give COLUMN=VALUE")
    return LearningCurve.from_csv(
        path,
        step_column=args.step_column,
        loss_column=args.loss_column,
        lr_column=args.lr_column,
        schedule=args.schedule,
        total_steps=args.total_steps,
        warmup=args.warmup,
        peak=args.peak_lr,
        final_ratio=args.final_ratio,
        decay_fraction=args.decay_fraction,
        tokens_per_step=args.tokens_per_step,
        where=dict(w.split("=", 1) for w in args.where) or None,
        parameters=args.parameters,
    )


def run_forecast(args: argparse.Namespace) -> Outcome:
    if args.out is not None and args.out.exists() and not args.overwrite:
        raise UsageError(f"--out {args.out} exists: pass --overwrite to replace it")
    prior = ForecastPrior.load(args.prior) if args.prior is not None else None
    curve = _forecast_curve(args)
    if args.fit_until is not None:
        curve = curve.head(args.fit_until)
    result = forecast(curve, steps=args.steps, tokens=args.tokens, flops=args.flops, prior=prior)
    document = result.to_document()
    if args.out is not None:
        document["output"] = str(result.save(args.out, overwrite=args.overwrite))
    return Outcome(document, result.summary())
