"""The settings of the library's three stages, their defaults defined once, importable without torch.

* :class:`ProfileSettings`: how many tokens a profile, an ablation and a held-out score read, and the
  shards a profile keeps;
* :class:`PlanStrategy`: how a plan picks blocks (depth), channels (width) and rescales what it keeps, and by
  which importance estimator;
* :class:`TrainSettings`: everything that shapes one training run.

The command line, the widgets, the report's workflow and the library functions read their defaults from these
dataclasses (``ProfileSettings().tokens``, ``TrainSettings().steps``). Each field carries its help text (and,
where the values are a fixed list, its choices) as dataclass field metadata, so that a parser can be
generated from the fields: ``dataclasses.fields(TrainSettings)[0].metadata["help"]``. The few surfaces that
deliberately train shorter say so here too (:data:`STUDY_STEPS`, :data:`INTERACTIVE_STEPS`).

This module imports nothing from the package but its plain names (:mod:`~subclone_viz.choices`) and errors.

Example::

    >>> from dataclasses import fields
    >>> from subclone_viz.settings import PlanStrategy, ProfileSettings, TrainSettings
    >>> ProfileSettings().tokens, TrainSettings().steps, PlanStrategy().depth
    (8192, 200, 'middle')
    >>> {f.name: f.metadata["help"] for f in fields(ProfileSettings)}["tokens"]
    'tokens to profile'
    >>> TrainSettings.of(steps=30).steps
    30
    >>> PlanStrategy(scaling="sqrt", width="uniform").width
    'uniform'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .choices import (
    DEFAULT_ESTIMATOR,
    DEPTH_STRATEGIES,
    DISTILL_ALPHA,
    DISTILL_TEMPERATURE,
    ESTIMATOR_NAMES,
    SCALINGS,
    SCHEDULES,
    WIDTH_STRATEGIES,
)
from .errors import ConfigurationError

MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
DEFAULT_WARMUP_FRACTION = 0.05
DEFAULT_EVALUATIONS = 10
# A speedup study trains every size x initialization x learning rate: each run is short.
STUDY_STEPS = 60
# The widgets train while the user watches: on SmolLM2 with the studio's lesson batches (4 x 64 tokens), two
# initializations of the default destination train this many steps in about three minutes of one laptop core
# (bench/bench_studio_lesson.py: 155 CPU seconds).
INTERACTIVE_STEPS = 40


def setting(default: Any, help: str, choices: Sequence[str] | None = None, plugins: str | None = None) -> Any:
    """A dataclass field carrying its help text (and choices) as metadata, for a parser generated from fields.

    ``plugins`` names the entry-point group under which plugins add more choices (an open list: the built-in
    ``choices`` and the plugins' names are valid); without it ``choices`` is the whole list."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if plugins is not None:
        metadata["plugins"] = plugins
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ProfileSettings:
    """How much data the profiling stage reads."""

    tokens: int = setting(8192, "tokens to profile")
    subclone_tokens: int = setting(
        4096, "tokens to profile (train split) when a subclone, comparison or study is run without a saved profile"
    )
    eval_tokens: int = setting(4096, "held-out tokens to score parents and destinations on")
    ablation_tokens: int = setting(2048, "held-out tokens of a block ablation")
    shards: int = setting(8, "shards the profile's sums are kept in, for resampling (stability)")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{f.name}={value!r} must be a positive whole number")


@dataclass(frozen=True)
class PlanStrategy:
    """How a plan chooses what the destination keeps (the names :func:`~subclone_viz.plan.plan` takes; plugins
    may register more strategies, which the plan checks)."""

    depth: str = setting("middle", "which blocks to keep", DEPTH_STRATEGIES, "subclone_viz.depth_strategies")
    width: str = setting(
        "importance", "which channels, neurons and heads to keep", WIDTH_STRATEGIES, "subclone_viz.width_strategies"
    )
    scaling: str = setting("sqrt", "how the kept weights are rescaled", SCALINGS, "subclone_viz.scalings")
    importance: str = setting(
        DEFAULT_ESTIMATOR, "the estimator width='importance' ranks by", ESTIMATOR_NAMES, "subclone_viz.estimators"
    )

    def as_kwargs(self) -> dict[str, str]:
        """The keyword arguments of :func:`~subclone_viz.plan.plan`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def lr_factor(step: int, warmup: int, total: int, schedule: str, final: float = 0.0, decay: float = 0.2) -> float:
    """Learning-rate multiplier for the optimizer step with index ``step`` (0-based).

    Warmup ramps linearly over ``warmup`` steps, its first step already above 0, reaching 1 at step
    ``warmup``; then cosine or linear decay towards ``final``, never reaching it on the last step (a zero
    learning rate would waste that step). ``"wsd"`` holds 1 until the last ``decay`` share of the steps after
    warmup, then decays linearly towards ``final``.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "wsd":
        stable_end = total - max(1, round(decay * (total - warmup)))
        if step < stable_end:
            return 1.0
        return final + (1.0 - final) * (1.0 - (step - stable_end) / max(total - stable_end, 1))
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "linear":
        return final + (1.0 - final) * (1.0 - progress)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes one training run; the one place its defaults live.

    ``lr`` and ``weight_decay`` may stay None for :func:`~subclone_viz.compare.compare`, which then uses the
    paper's values for each initialization; :func:`~subclone_viz.train.train` needs them set.
    """

    steps: int = setting(200, "optimizer steps (under accelerate launch each step takes one batch per process)")
    lr: float | None = setting(None, "peak learning rate of AdamW")
    weight_decay: float | None = setting(None, "AdamW weight decay, applied to weight matrices only")
    warmup: int | None = setting(None, "linear warmup steps (None: 5% of steps)")
    schedule: str = setting("cosine", "after warmup: cosine, linear, constant or wsd (warmup-stable-decay)", SCHEDULES)
    final_lr_ratio: float = setting(0.0, "cosine, linear and wsd decay towards lr * this (0.1: the usual LM recipe)")
    decay_fraction: float = setting(0.2, "wsd: the share of the steps after warmup spent in the final linear decay")
    eval_every: int | None = setting(
        None, "steps between evaluations (None: steps // 10); also one before and one at the end"
    )
    seed: int = setting(0, "seeds Python, NumPy and torch (random init, dropout): equal seeds give equal histories")
    mixed_precision: str = setting("auto", "auto: bf16 on a GPU that supports it, else fp32", MIXED_PRECISIONS)
    max_grad_norm: float | None = setting(1.0, "clip the gradient norm to this (None: no clipping)")
    # With a teacher: loss = (1 - distill_alpha) * task loss + distill_alpha * T^2 * KL(teacher || student) at T.
    distill_alpha: float = setting(DISTILL_ALPHA, "weight of the distillation loss (0: none, 1: only the teacher)")
    distill_temperature: float = setting(DISTILL_TEMPERATURE, "temperature of the distillation loss")

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r} must be a positive integer")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be positive")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not a schedule; choose one of {', '.join(SCHEDULES)}")
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            raise ValueError(f"final_lr_ratio={self.final_lr_ratio!r} must be between 0 and 1 (a fraction of lr)")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction={self.decay_fraction!r} must be in (0, 1] (a share of the steps)")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise ValueError(f"warmup={self.warmup!r} must be between 0 and steps={self.steps}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every={self.eval_every!r} must be a positive number of steps")
        if self.mixed_precision not in MIXED_PRECISIONS:
            choices = ", ".join(MIXED_PRECISIONS)
            raise ValueError(f"mixed_precision={self.mixed_precision!r} is not valid; choose one of {choices}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm!r} must be positive, or None for no clipping")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(
                f"distill_alpha={self.distill_alpha!r} must be between 0 (no distillation) and 1 "
                f"(the teacher's distribution only)"
            )
        if not self.distill_temperature > 0:
            raise ValueError(
                f"distill_temperature={self.distill_temperature!r} must be positive (1: the plain "
                f"distributions; higher: softer ones)"
            )

    @classmethod
    def of(cls, settings: "TrainSettings | None" = None, **overrides: Any) -> "TrainSettings":
        """``settings`` (default: the defaults) with ``overrides`` replacing some fields, by name."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise TypeError(f"unknown training setting(s) {unknown}; valid ones: {', '.join(valid)}")
        return replace(settings or cls(), **overrides)

    @property
    def resolved_warmup(self) -> int:
        return round(DEFAULT_WARMUP_FRACTION * self.steps) if self.warmup is None else self.warmup

    @property
    def resolved_eval_every(self) -> int:
        return max(1, self.steps // DEFAULT_EVALUATIONS) if self.eval_every is None else self.eval_every

    def learning_rates(self) -> list[float]:
        """The learning rate of every optimizer step of the run, in order (what a loss forecast reads)."""
        if self.lr is None:
            raise ValueError("lr is not set: the schedule needs a peak learning rate")
        return [
            self.lr
            * lr_factor(i, self.resolved_warmup, self.steps, self.schedule, self.final_lr_ratio, self.decay_fraction)
            for i in range(self.steps)
        ]


__all__ = [
    "DEFAULT_EVALUATIONS",
    "DEFAULT_WARMUP_FRACTION",
    "INTERACTIVE_STEPS",
    "MIXED_PRECISIONS",
    "STUDY_STEPS",
    "PlanStrategy",
    "ProfileSettings",
    "TrainSettings",
    "lr_factor",
    "setting",
]
