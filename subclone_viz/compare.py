"""Comparing initializations: how much faster does a subclone learn than random init?

The paper's claim is about training speed: a subcloned destination reaches a randomly initialized one's
quality with several times fewer steps. :func:`compare` makes that measurable: it trains one destination
per initialization with :func:`~subclone_viz.train.train`, on identical batches in identical order:

* ``"random"``: the architecture's own random initialization, same shape as the subclone;
* ``"subclone"``: the paper (importance-ranked widths, middle blocks dropped, sqrt weight scaling);
* ``"subclone-calibrated"``: the same with scaling matched to the parent's output std on calibration data;
* ``"no-scaling"``, ``"no-reorder"``: the paper's ablations (no scaling; leading indices, no reordering);
* ``"uniform"``: evenly spaced indices without scaling (Xu et al.'s weight selection);
* ``"subclone+distill"``, ``"random+distill"``: the same starts as ``"subclone"`` and ``"random"``, trained
  with the parent as teacher (:func:`~subclone_viz.train.distillation_loss`; ``distill_alpha`` and
  ``distill_temperature`` in the settings), so that the gain of the start and of the teacher separate.

Each initialization trains at its own tuned learning rate (:mod:`subclone_viz.inits`: for language models
3e-3 from random and 1e-3 inherited, the best of this project's sweeps, so that random init is not a slowed-down
baseline); ``lr_preset="paper"`` gives the paper's Table 1 instead (1e-4 for both). The :class:`Comparison`
records each init's rates and their source (:meth:`Comparison.lr_note`) and holds the histories, the plans and, per initialization, the initial and final held-out
loss (and accuracy) and the :func:`speedup` over random: the steps random needs to reach its own final
held-out loss divided by the steps the other needs to reach that same loss, and the same ratio in seconds
of training (a teacher's forward makes a step dearer, so the two differ for the ``+distill`` inits). A
speedup measured against a random init that was still improving at its end is marked as holding at this
budget only (:func:`reference_converged`).

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, shuffle=True)
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=2)
    >>> prof = sv.profile(parent, heldout, progress=False)
    >>> result = sv.compare(parent, sv.DestinationSpec(layers=4, hidden=192), train, profile=prof, steps=4,
    ...                     inits=["random", "subclone", "subclone+distill"], eval_batches=heldout, progress=False)
    >>> [(row["init"], row["lr"], row["steps"]) for row in result.summary_table()]   # each at its tuned rate
    [('random', 0.003, 4), ('subclone', 0.001, 4), ('subclone+distill', 0.001, 4)]
    >>> result.lr_note()
    'learning rates: random 0.003, subclone 0.001, subclone+distill 0.001 (tuned: best of the sweep in ...)'
    >>> sorted(result.metrics["subclone"])[-4:]     # per step and per second of training, over random init
    ['speedup_lower_bound', 'speedup_per_second', 'steps', 'target_loss']
    >>> result.save("runs/smollm2-4x192")
    PosixPath('runs/smollm2-4x192')
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import distributed
from ._atomic import read_json, staged_directory
from .inits import DEFAULT_LR_PRESET, INITS, default_hyperparameters, hyperparameter_source
from .plan import DEPTHS, WIDTHS, plan
from .profile import profile as profile_parent
from .records import Record, register_record
from .settings import PlanStrategy, ProfileSettings
from .subclone import random_init, subclone
from .train import EvalRecord, History, StepRecord, StopSignal, TrainSettings, train

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import DestinationSpec, SubclonePlan
    from .profile import Profile

__all__ = [
    "INITS",
    "Comparison",
    "Speedup",
    "compare",
    "default_hyperparameters",
    "learning_rate_note",
    "reference_converged",
    "speedup",
    "speedup_text",
]

PROFILE_TOKENS = ProfileSettings().subclone_tokens
REFERENCE_INIT = "random"
# The reference counts as converged when the second half of its run brought at most this share of its whole
# drop in held-out loss. The tuned random runs of the speedup study brought 4-7% (bench/results/speedup_study);
# a run cut short while still falling brings a third or more.
CONVERGED_SECOND_HALF_SHARE = 0.25


# --------------------------------------------------------------------------------------------------------
# Speedup


@dataclass
class Speedup:
    """How many times fewer steps (and seconds) ``other`` needs than the reference to reach the reference's
    final held-out loss.

    ``speedup_lower_bound``: ``other`` was already at the target at its first evaluation, so the true
    speedup is at least ``speedup`` (the reference's steps over the first evaluation step after 0).
    ``reached`` False: ``other`` never got there; ``speedup`` is then the reference's steps over the steps
    ``other`` trained, an upper bound below 1. ``speedup`` is None when it cannot be defined (the
    reference never improved on its first evaluation, or ``other`` has no evaluation after its first).
    ``speedup_per_second`` is the same rule on the training clock (:attr:`EvalRecord.time`: seconds spent
    in training steps, evaluations not counted), with the same two flags. ``reference_converged`` False: the
    reference was still improving when its run ended (:func:`reference_converged`), so the speedup holds at the
    loss it reached in this budget only, a bound of this budget rather than of training to the end.
    """

    speedup: float | None
    speedup_lower_bound: bool
    reached: bool
    target_loss: float
    reference_steps: float | None  # steps the reference needs to reach target_loss (interpolated)
    steps: float | None  # steps ``other`` needs (None when not reached)
    speedup_per_second: float | None = None
    reference_seconds: float | None = None  # training seconds the reference needs to reach target_loss
    seconds: float | None = None  # training seconds ``other`` needs (None when not reached)
    reference_converged: bool | None = None  # None: too few evaluations to tell (:func:`reference_converged`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def speedup_text(row: Mapping[str, Any], key: str = "speedup", compact: bool = False) -> str:
    """A speedup over random init (a :class:`Speedup` as a dict, or a summary row; per step, or
    ``key="speedup_per_second"``) as a reader would say it: ``4.1x``, ``more than 8x``, ``less than 1x (never
    reached random's final loss)`` (an init that never reached the target would need more than all it trained,
    so its ratio is an upper bound, per step and per second alike), and ``... (at this budget: random init not
    converged)`` when the reference was still improving at its end; a study of several seeds adds the range
    of its seeds' speedups (the value is their geometric mean).

    ``compact=True`` says the same in a table cell: ``4.00x``, ``>=8.00x``, ``<1.00x``, ``[3.1-5.2]`` for the
    seeds' range, and a ``*`` for a reference that had not converged (the table's footnote says what it means).

        >>> speedup_text({"speedup": 4.1, "reached": True, "seeds": 2, "speedup_range": [3.2, 5.0]})
        '4.1x (3.2-5x over 2 seeds)'
        >>> speedup_text({"speedup": 4.1, "reached": True, "seeds": 2, "speedup_range": [3.2, 5.0]}, compact=True)
        '4.10x [3.2-5.0]'
    """
    value = row.get(key)
    if value is None:
        return "n/a"
    lower_bound, never_reached = bool(row.get("speedup_lower_bound")), row.get("reached") is False
    spread = row.get(f"{key}_range") if row.get("seeds", 1) > 1 else None
    not_converged = row.get("reference_converged") is False
    if compact:
        text = (">=" if lower_bound else "<" if never_reached else "") + f"{value:.2f}x"
        text += f" [{spread[0]:.1f}-{spread[1]:.1f}]" if spread else ""
        return text + ("*" if not_converged else "")
    if lower_bound:
        text = f"more than {value:.2g}x"
    elif never_reached:
        text = f"less than {value:.2g}x (never reached random's final loss)"
    else:
        text = f"{value:.2g}x"
    if spread:
        text += f" ({spread[0]:.2g}-{spread[1]:.2g}x over {row['seeds']} seeds)"
    return text + (" (at this budget: random init not converged)" if not_converged else "")


def reference_converged(evals: list[EvalRecord]) -> bool | None:
    """Whether a run had settled by its end: the second half of its steps brought at most
    :data:`CONVERGED_SECOND_HALF_SHARE` of its whole drop in held-out loss. None with fewer than three
    evaluations (no midpoint to judge by); False when the loss never fell."""
    if len(evals) < 3:
        return None
    first, last = evals[0], evals[-1]
    middle = [record for record in evals if record.step <= last.step / 2][-1]
    drop = first.loss - last.loss
    if drop <= 0:
        return False
    return (middle.loss - last.loss) <= CONVERGED_SECOND_HALF_SHARE * drop


def _position(record: EvalRecord, axis: str) -> float:
    return float(record.step if axis == "steps" else record.time)


def position_at_loss(evals: list[EvalRecord], target: float, axis: str = "steps") -> float | None:
    """The first step (``axis="steps"``) or training second (``"seconds"``) at which the held-out loss is at
    or below ``target``, linearly interpolated between evaluations; None if it never gets there."""
    for index, record in enumerate(evals):
        if record.loss <= target:
            if index == 0:
                return _position(record, axis)
            before = evals[index - 1]
            fraction = (before.loss - target) / (before.loss - record.loss)
            return _position(before, axis) + fraction * (_position(record, axis) - _position(before, axis))
    return None


def _ratio(reference: list[EvalRecord], other: list[EvalRecord], target: float, axis: str):
    """(speedup, lower bound, reached, reference's position, other's position) along one axis."""
    reference_at = position_at_loss(reference, target, axis)
    other_at = position_at_loss(other, target, axis)
    if not reference_at:
        return None, False, other_at is not None, reference_at, other_at
    if other_at is None:
        trained = _position(other[-1], axis)
        return (reference_at / trained if trained > 0 else None), False, False, reference_at, None
    first = _position(other[0], axis)
    if other_at <= first:
        later = [_position(r, axis) for r in other if _position(r, axis) > 0]
        bound = first if first > 0 else (later[0] if later else None)
        return (reference_at / bound if bound else None), True, True, reference_at, other_at
    return reference_at / other_at, False, True, reference_at, other_at


def speedup(reference: History, other: History) -> Speedup:
    """The speedup of ``other`` over ``reference`` (usually random init) at the reference's final held-out
    loss, in steps and in seconds of training."""
    if not reference.evals or not other.evals:
        missing = "reference" if not reference.evals else "other"
        raise ValueError(f"the {missing} history has no evaluations; train with eval_batches to measure a speedup")
    target = reference.evals[-1].loss
    per_step, lower_bound, reached, reference_steps, steps = _ratio(reference.evals, other.evals, target, "steps")
    per_second, _, _, reference_seconds, seconds = _ratio(reference.evals, other.evals, target, "seconds")
    return Speedup(
        speedup=per_step,
        speedup_lower_bound=lower_bound,
        reached=reached,
        target_loss=target,
        reference_steps=reference_steps,
        steps=steps if reached else None,
        speedup_per_second=per_second,
        reference_seconds=reference_seconds,
        seconds=seconds if reached else None,
        reference_converged=reference_converged(reference.evals),
    )


# --------------------------------------------------------------------------------------------------------
# Comparing initializations


@register_record
@dataclass
class Comparison(Record):
    """Histories, plans and metrics of one destination shape trained from several initializations.

    A record stored as a directory (``save``/``load``): ``summary.json`` carries its format and version."""

    FORMAT = "subclone_viz.comparison"
    VERSION = 1
    READS = (0,)  # directories written before records were versioned

    histories: dict[str, History]
    plans: dict[str, dict[str, Any] | None]  # the SubclonePlan of each init as a dict; None for random
    metrics: dict[str, dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False

    def summary_table(self) -> list[dict[str, Any]]:
        """One row per initialization: hyperparameters, initial/final held-out loss and accuracy, speedup per
        step and per second of training, and the seconds it trained."""
        rows = []
        for init, history in self.histories.items():
            metric = self.metrics.get(init, {})
            rows.append(
                {
                    "init": init,
                    "lr": history.config.get("lr"),
                    "weight_decay": history.config.get("weight_decay"),
                    "steps": history.last_step,
                    "initial_loss": metric.get("initial_loss"),
                    "final_loss": metric.get("final_loss"),
                    "initial_accuracy": metric.get("initial_accuracy"),
                    "final_accuracy": metric.get("final_accuracy"),
                    "speedup": metric.get("speedup"),
                    "speedup_per_second": metric.get("speedup_per_second"),
                    "speedup_lower_bound": metric.get("speedup_lower_bound"),
                    "reached": metric.get("reached"),
                    "reference_converged": metric.get("reference_converged"),
                    "train_seconds": history.steps[-1].time if history.steps else 0.0,
                    "distill_alpha": history.config.get("distill_alpha"),
                    "stopped_early": history.stopped_early,
                }
            )
        return rows

    def lr_note(self) -> str:
        """The learning rates behind this comparison's speedups and their source (:func:`learning_rate_note`);
        from the histories alone for a comparison saved before the sources were recorded."""
        rates = self.config.get("learning_rates") or {
            init: {"lr": history.config.get("lr"), "source": None} for init, history in self.histories.items()
        }
        return learning_rate_note(rates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "histories": {k: h.to_dict() for k, h in self.histories.items()},
            "plans": self.plans,
            "metrics": self.metrics,
            "config": self.config,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Comparison":
        """A comparison from :meth:`to_dict`'s data, each history checked."""
        missing = [key for key in ("histories", "plans", "metrics", "config", "stopped_early") if key not in data]
        if missing:
            raise ValueError(f"a comparison lacks {', '.join(missing)}")
        if not isinstance(data["histories"], dict) or not all(isinstance(h, dict) for h in data["histories"].values()):
            raise ValueError("'histories' must map each initialization to a training history")
        for key in ("plans", "metrics", "config"):
            if not isinstance(data[key], dict):
                raise ValueError(f"{key!r} must be an object, not a {type(data[key]).__name__}")
        return cls(
            histories={init: History.from_dict(h) for init, h in data["histories"].items()},
            plans=data["plans"],
            metrics=data["metrics"],
            config=data["config"],
            stopped_early=bool(data["stopped_early"]),
        )

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``histories.json``, ``<init>.csv`` per initialization and ``summary.json`` (config, plans,
        metrics, table) into ``directory``, all at once: a staging directory renamed into place. Under several
        processes only the main one writes; every process returns the path (or raises its error)."""
        return distributed.on_main(self._write, directory, overwrite)

    def _write(self, directory: str | os.PathLike, overwrite: bool) -> Path:
        with staged_directory(directory, overwrite) as staging:
            self.write_files(staging)
        return Path(directory).expanduser()

    def write_files(self, directory: Path) -> None:
        """The files of :meth:`save`, written into an existing (staging) directory."""
        (directory / "histories.json").write_text(
            json.dumps({k: h.to_dict() for k, h in self.histories.items()}, indent=1)
        )
        for init, history in self.histories.items():
            (directory / f"{init}.csv").write_text(history.csv_text())
        summary = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "config": self.config,
            "stopped_early": self.stopped_early,
            "metrics": self.metrics,
            "table": self.summary_table(),
            "plans": self.plans,
        }
        (directory / "summary.json").write_text(json.dumps(summary, indent=1))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Comparison":
        """Read back a directory written by :meth:`save`; a missing, damaged or hand-edited file raises
        :class:`~subclone_viz._atomic.DamagedFileError` naming it."""
        directory = Path(directory).expanduser()
        histories = read_json(directory / "histories.json", dict)
        summary = read_json(directory / "summary.json", dict)
        summary.pop("table", None)  # derived from the rest, for readers of the file
        return cls.from_document({**summary, "histories": histories}, directory / "summary.json")


def comparison_metrics(histories: Mapping[str, History]) -> dict[str, dict[str, Any]]:
    """Initial and final held-out loss and accuracy per run, and the speedup over ``"random"`` if it ran."""
    reference = histories.get(REFERENCE_INIT)
    metrics = {}
    for init, history in histories.items():
        if not history.evals:
            metrics[init] = {}
            continue
        first, last = history.evals[0], history.evals[-1]
        metric: dict[str, Any] = {
            "initial_loss": first.loss,
            "final_loss": last.loss,
            "initial_accuracy": first.accuracy,
            "final_accuracy": last.accuracy,
        }
        if reference is not None and reference.evals:
            metric.update(speedup(reference, history).to_dict())
        metrics[init] = metric
    return metrics


def _check_inits(inits: Iterable[str], overrides: Mapping[str, Mapping[str, float] | None]) -> list[str]:
    inits = list(inits)
    valid = ", ".join(map(repr, INITS))
    unknown = [name for name in inits if name not in INITS]
    if unknown:
        raise ValueError(f"unknown initialization(s) {unknown}; valid ones: {valid}")
    if not inits or len(set(inits)) != len(inits):
        raise ValueError(f"inits={inits!r} must name each initialization once, at least one of {valid}")
    for argument, mapping in overrides.items():
        extra = sorted(set(mapping or {}) - set(inits))
        if extra:
            raise ValueError(f"{argument} names {extra}, which are not among inits={inits}")
    return inits


def initial_destination(
    parent: "Parent",
    spec: "DestinationSpec",
    init: str,
    profile: "Profile | None",
    calibration_batches: Iterable[dict[str, torch.Tensor]],
    seed: int,
) -> tuple[nn.Module, "SubclonePlan | None"]:
    """The destination an initialization starts from, in fp32 (mixed precision autocasts, it never trains
    half-precision weights), and the plan it was sliced by (None for random init)."""
    recipe = INITS[init].strategies
    if recipe is None:
        # The shape the subclone would have; random init ignores which indices a plan keeps.
        return random_init(parent, spec, seed=seed).float(), None
    chosen = plan(parent, profile, spec, **recipe)
    return subclone(parent, chosen, calibration_batches=calibration_batches).float(), chosen


def _learning_rates(
    task: str,
    inits: list[str],
    settings: TrainSettings,
    lrs: Mapping[str, float],
    weight_decays: Mapping[str, float],
    preset: str,
) -> dict[str, dict[str, Any]]:
    """Each init's learning rate and weight decay, and where the learning rate came from: ``lrs``, then
    ``settings``, then the preset's default for the init (:func:`~subclone_viz.inits.hyperparameters`)."""
    rates = {}
    for init in inits:
        default_lr, default_wd = default_hyperparameters(task, init, preset)
        if init in lrs or settings.lr is not None:
            lr, source = lrs.get(init, settings.lr), "set by the caller"
        else:
            lr, source = default_lr, hyperparameter_source(task, init, preset)
        weight_decay = weight_decays.get(
            init, settings.weight_decay if settings.weight_decay is not None else default_wd
        )
        rates[init] = {"lr": lr, "weight_decay": weight_decay, "source": source}
    return rates


def learning_rate_note(learning_rates: Mapping[str, Mapping[str, Any]]) -> str:
    """One sentence naming the learning rate behind every run and where it came from, for a table's caption:
    ``learning rates: random 0.003, subclone 0.001 (tuned: best of the sweep in ...)``."""
    by_source: dict[str, list[str]] = {}
    for init, rate in learning_rates.items():
        by_source.setdefault(rate.get("source") or "source not recorded", []).append(f"{init} {rate['lr']:g}")
    return "learning rates: " + "; ".join(f"{', '.join(runs)} ({source})" for source, runs in by_source.items())


def compare(
    parent: "Parent",
    spec: "DestinationSpec",
    batches: Iterable[dict[str, torch.Tensor]],
    inits: Iterable[str] = ("random", "subclone"),
    settings: TrainSettings | None = None,
    *,
    eval_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    profile: "Profile | None" = None,
    lrs: Mapping[str, float] | None = None,
    weight_decays: Mapping[str, float] | None = None,
    calibration_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    callback: Callable[[History, StepRecord | EvalRecord], None] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    stop: StopSignal | None = None,
    lr_preset: str = DEFAULT_LR_PRESET,
    trained: dict[str, "torch.nn.Module"] | None = None,
    **overrides: Any,
) -> Comparison:
    """Train one destination of shape ``spec`` per initialization, on the same batches in the same order.

    Args:
        parent: the loaded parent.
        spec: the destination's shape (the same for every initialization).
        batches: training batches (also the profiling and calibration data unless given).
        inits: names from :data:`INITS`, trained in this order.
        settings: the :class:`~subclone_viz.train.TrainSettings` of every run (one seed for all: random init
            and dropout). Its ``lr``/``weight_decay``, when set, apply to every init; when None, each init
            gets its own default of ``lr_preset`` (:mod:`subclone_viz.inits`). Its ``distill_alpha`` and
            ``distill_temperature`` apply to the ``+distill`` inits, whose teacher is ``parent.model``.
        eval_batches: held-out batches for the loss curves and the speedup; without them the first few
            training batches are used (with a warning: that measures fitting, not generalization).
        profile: the parent's profile; computed from ``batches`` (a few thousand tokens) when an init needs it.
        lrs, weight_decays: per-init values, overriding ``settings`` and the defaults.
        calibration_batches: for ``"subclone-calibrated"`` (default ``batches``).
        callback: ``callback(history, record)`` during every run; ``history.label`` names the init.
        checkpoint_dir: checkpoints of each run in its own subdirectory ``checkpoint_dir/<init>``.
        resume: continue each run from its latest checkpoint.
        trained: a dict filled with each init's trained model as it finishes (kept in memory; by default each
            is freed once its run ends), for views that generate with them.
        progress: progress bars.
        stop: stops the current run at the next step and skips the remaining ones.
        lr_preset: the defaults where neither ``lrs`` nor ``settings`` set a rate: ``"tuned"`` (each init at
            the best rate of this project's sweeps) or ``"paper"`` (the paper's Table 1). The comparison's
            ``config["learning_rates"]`` records each init's rates and where they came from.
        **overrides: :class:`~subclone_viz.train.TrainSettings` fields replacing those of ``settings``
            (``steps=300, eval_every=30, seed=1``).
    """
    settings = TrainSettings.of(settings, **overrides)
    inits, rates = _inits_and_rates(parent.family.task, inits, settings, lrs, weight_decays, lr_preset)
    eval_batches, eval_source = _held_out(batches, eval_batches)
    profile = _profile_if_needed(parent, inits, batches, profile, progress)
    calibration = calibration_batches or batches
    start = partial(
        initial_destination, parent, spec, profile=profile, calibration_batches=calibration, seed=settings.seed
    )
    run = partial(train, batches=batches, eval_batches=eval_batches, family=parent.family, callback=callback)
    run = partial(run, resume=resume, progress=progress, stop=stop)
    histories, plans = _train_each(inits, settings, rates, start, run, parent.model, checkpoint_dir, trained)
    recorded = {"inits": inits, "settings": settings, "eval_source": eval_source, "profile": profile}
    return _comparison(
        parent, spec, batches, histories, plans, {**recorded, "lr_preset": lr_preset, "learning_rates": rates}
    )


def _profile_if_needed(
    parent: "Parent",
    inits: list[str],
    batches: Iterable[dict[str, torch.Tensor]],
    profile: "Profile | None",
    progress: bool,
) -> "Profile | None":
    """``profile``, or when an init ranks by one and none was given, the parent's, measured on ``batches``."""
    if profile is None and any(_ranks_by_profile(INITS[i].strategies) for i in inits):
        return profile_parent(parent, batches, max_tokens=PROFILE_TOKENS, progress=progress)
    return profile


def _comparison(
    parent: "Parent",
    spec: "DestinationSpec",
    batches: Iterable[dict[str, torch.Tensor]],
    histories: dict[str, History],
    plans: dict[str, dict[str, Any] | None],
    run: dict[str, Any],
) -> "Comparison":
    """The record of the runs: their histories, plans, speedup metrics and configuration."""
    config = _comparison_config(parent, spec, batches, histories, run)
    stopped = any(history.stopped_early for history in histories.values())
    return Comparison(histories, plans, comparison_metrics(histories), config, stopped_early=stopped)


def _inits_and_rates(
    task: str,
    inits: Iterable[str],
    settings: TrainSettings,
    lrs: Mapping[str, float] | None,
    weight_decays: Mapping[str, float] | None,
    preset: str,
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The checked inits, and each one's learning rate and weight decay (see :func:`_learning_rates`)."""
    lrs, weight_decays = dict(lrs or {}), dict(weight_decays or {})
    inits = _check_inits(inits, {"lrs": lrs, "weight_decays": weight_decays})
    return inits, _learning_rates(task, inits, settings, lrs, weight_decays, preset)


def _train_each(
    inits: list[str],
    settings: TrainSettings,
    rates: dict[str, dict[str, Any]],
    start: Callable[..., tuple[nn.Module, "SubclonePlan | None"]],
    run: Callable[..., History],
    teacher: nn.Module,
    checkpoint_dir: str | os.PathLike | None,
    trained: dict[str, nn.Module] | None,
) -> tuple[dict[str, History], dict[str, dict[str, Any] | None]]:
    """Each init's destination (``start(init=...)``) trained in turn by ``run`` at its own rates (the distilling
    inits from ``teacher``), and the plan it was sliced by; after a run that was stopped, the rest are skipped."""
    histories: dict[str, History] = {}
    plans: dict[str, dict[str, Any] | None] = {}
    for init in inits:
        run_settings = replace(settings, lr=rates[init]["lr"], weight_decay=rates[init]["weight_decay"])
        model, chosen = start(init=init)
        plans[init] = chosen.to_dict() if chosen is not None else None
        histories[init] = run(
            model,
            settings=run_settings,
            teacher=teacher if INITS[init].distill else None,
            checkpoint_dir=Path(checkpoint_dir) / init if checkpoint_dir is not None else None,
            label=init,
        )
        if trained is not None:
            trained[init] = model.eval()
        del model
        if histories[init].stopped_early:
            break
    return histories, plans


def _held_out(
    batches: Iterable[dict[str, torch.Tensor]], eval_batches: Iterable[dict[str, torch.Tensor]] | None
) -> tuple[Iterable[dict[str, torch.Tensor]], str]:
    """The batches the runs are scored on, and what they are; the first training batches, with a warning,
    when none are given."""
    if eval_batches is not None:
        return eval_batches, getattr(eval_batches, "description", "held-out batches")
    warnings.warn(
        "compare() without eval_batches evaluates on the first training batches: pass held-out batches to "
        "measure generalization",
        stacklevel=3,
    )
    return list(itertools.islice(batches, 4)), "the first 4 training batches"


def _ranks_by_profile(strategies: Mapping[str, Any] | None) -> bool:
    """Whether an initialization's plan strategies rank by a profile (random init has none)."""
    if not strategies:
        return False
    width, depth = strategies.get("width", PlanStrategy().width), strategies.get("depth", PlanStrategy().depth)
    return WIDTHS[width].needs_profile or (isinstance(depth, str) and DEPTHS[depth].needs_profile)


def _comparison_config(
    parent: "Parent",
    spec: "DestinationSpec",
    batches: Iterable[dict[str, torch.Tensor]],
    histories: dict[str, History],
    run: dict[str, Any],
) -> dict[str, Any]:
    """What a comparison records about how it was run (``run``: inits, settings, eval_source, profile,
    lr_preset, learning_rates)."""
    settings, inits, profile = run["settings"], run["inits"], run["profile"]
    dims = spec.resolve(parent.dims, parent.family.heads_follow_hidden)
    return {
        "parent": {"name": parent.name, "description": parent.description, "dims": parent.dims.to_dict()},
        "destination": dims.to_dict(),
        "inits": inits,
        "steps": settings.steps,
        "seed": settings.seed,
        "distill": (
            {"alpha": settings.distill_alpha, "temperature": settings.distill_temperature}
            if any(INITS[i].distill for i in inits)
            else None
        ),
        "batches": getattr(batches, "description", None),
        "eval_batches": run["eval_source"],
        "profile": {"source": profile.source, "tokens": profile.tokens} if profile is not None else None,
        "reference": REFERENCE_INIT if REFERENCE_INIT in histories else None,
        "lr_preset": run["lr_preset"],
        "learning_rates": run["learning_rates"],
    }
