"""Loss forecasts that read the learning-rate schedule: where will this run end, and how sure is that?

A saturating power law in steps fitted to the start of a run misses its end: the decay of the learning rate
at the end of a schedule lowers the loss in a way no early point shows. The forecast here reads the whole
planned schedule and fits the form of Tissue et al. (2024, "Scaling law with learning rate annealing")::

    L(s) = L0 + A * S1(s) ** -alpha - C * S2(s)

with the learning rates divided by their peak, ``S1(s)`` the area under them over the first ``s`` steps
(steps at full rate), and ``S2(s)`` the annealing area: ``m_i = decay * m_{i-1} + max(0, eta_{i-1} - eta_i)``
summed over the first ``s`` steps. Early points pin ``L0``, ``A`` and ``alpha`` (a grid over ``alpha``,
linear least squares for the rest); they cannot pin the annealing coefficient ``C``, so it comes from a
:class:`ForecastPrior` calibrated on full runs (:meth:`ForecastPrior.fit`), together with the momentum
``decay`` and the width of the intervals. A quarter of a noisy run pins ``alpha`` poorly too: the prior can
hold the exponent the calibration runs' whole curves share, and a width (in log alpha) within which an early
fit may stray from it, both chosen by leave-one-out on the calibration runs.

The interval adds three spreads in quadrature: the residual noise, the forecasts of every ``alpha`` the
early points do not rule out (a likelihood-ratio band), and the spread of ``C`` across the calibration runs
times the annealing still ahead. The prior multiplies that by a factor calibrated on held-out runs (each
calibration run forecast from its first quarter with a prior fitted on the others), so that the interval
holds the truth at its nominal level (80%) on those runs. :data:`DEFAULT_PRIOR` says where its numbers came
from; calibrate your own setup with :meth:`ForecastPrior.fit`.

:class:`LearningCurve` holds held-out losses at some steps and the learning rate of every step of the whole
run: :meth:`~subclone_viz.train.History.curve` builds one for the library's own runs, and
:meth:`LearningCurve.from_csv` reads any trainer's log (an ``lr`` column, or a named schedule).
:func:`forecast` gives a :class:`Forecast` record at a horizon in steps, tokens or FLOPs
(6 x parameters x tokens, as :mod:`subclone_viz.sizing` counts them).

Example::

    >>> import numpy as np
    >>> from subclone_viz.forecast import ForecastPrior, LearningCurve, forecast
    >>> from subclone_viz.train import TrainSettings
    >>> lrs = TrainSettings(steps=400, lr=1e-3, schedule="cosine", final_lr_ratio=0.1).learning_rates()
    >>> truth = LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.002, every=10)
    >>> early = truth.head(100)                           # the first quarter: 10 evaluations
    >>> prior = ForecastPrior(C=0.002, decay=0.99)
    >>> result = forecast(early, prior=prior)             # at the end of the planned run, step 400
    >>> round(result.loss, 2), round(truth.losses[-1], 2)
    (2.06, 2.06)
    >>> result.low <= result.loss <= result.high
    True
    >>> forecast(truth.head(20), prior=prior)
    Traceback (most recent call last):
    ...
    subclone_viz.forecast.TooFewPointsError: a forecast needs at least 4 evaluations after step 0; this curve has 2 (steps 10, 20)
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._atomic import DamagedFileError
from .choices import SCHEDULES
from .errors import UserError
from .records import Record, register_record
from .settings import TrainSettings

if TYPE_CHECKING:
    from .train import History

__all__ = [
    "DEFAULT_PRIOR",
    "Forecast",
    "ForecastError",
    "ForecastPrior",
    "LearningCurve",
    "MIN_POINTS",
    "NOMINAL_LEVEL",
    "NonFiniteLossError",
    "Reach",
    "ScheduleTooShortError",
    "TooFewPointsError",
    "forecast",
    "steps_to_reach",
    "stretch_schedule",
]

MIN_POINTS = 4  # evaluations after step 0: three parameters (L0, A, alpha) and one degree of freedom left
NOMINAL_LEVEL = 0.8
_ALPHAS = np.geomspace(0.02, 3.0, 160)
_DECAYS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999)
_BURN_INS = (0.0, 0.02, 0.05, 0.1)
_ALPHA_WIDTHS = (None, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02)  # the exponent prior's widths, in log alpha
_CHI2_1 = {0.8: 1.642, 0.9: 2.706, 0.95: 3.841}  # likelihood-ratio thresholds of the alpha band


class ForecastError(UserError, ValueError):
    """A curve or horizon a forecast cannot be made from."""


class TooFewPointsError(ForecastError):
    """Fewer evaluations than the fit needs."""


class ScheduleTooShortError(ForecastError):
    """The learning rates stop before the horizon: the annealing ahead is unknown."""


class NonFiniteLossError(ForecastError):
    """A loss that is NaN or infinite (a diverged run)."""


# --------------------------------------------------------------------------------------------------------
# Curves


def schedule_areas(lrs: Sequence[float], decay: float) -> tuple[np.ndarray, np.ndarray]:
    """``(S1, S2)``, each of length ``len(lrs) + 1``: index ``s`` is the area after ``s`` steps, with the rates
    divided by their peak. ``S1``: the area under the rates; ``S2``: the momentum-smoothed annealing area."""
    eta = np.asarray(lrs, dtype=float) / float(np.max(lrs))
    drops = np.maximum(0.0, np.concatenate([[0.0], eta[:-1] - eta[1:]]))  # (N,) decrease before each step
    momentum = np.empty_like(drops)
    carried = 0.0
    for i, drop in enumerate(drops):
        carried = decay * carried + drop
        momentum[i] = carried
    return np.concatenate([[0.0], np.cumsum(eta)]), np.concatenate([[0.0], np.cumsum(momentum)])


@dataclass(frozen=True)
class LearningCurve:
    """Held-out losses at some steps, and the learning rate of every step of the whole planned run.

    ``lrs[i]`` is the rate of the optimizer step ``i + 1`` (step 0 is before training); ``len(lrs)`` is the
    planned length. ``tokens_per_step`` and ``parameters`` let a horizon be given in tokens or FLOPs.
    """

    steps: tuple[int, ...]
    losses: tuple[float, ...]
    lrs: tuple[float, ...]
    tokens_per_step: float | None = None
    parameters: int | None = None
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        object.__setattr__(self, "losses", tuple(float(v) for v in self.losses))
        object.__setattr__(self, "lrs", tuple(float(v) for v in self.lrs))
        if len(self.steps) != len(self.losses):
            raise ForecastError(f"{len(self.steps)} steps but {len(self.losses)} losses: give one loss per step")
        bad = [(s, v) for s, v in zip(self.steps, self.losses) if not math.isfinite(v)]
        if bad:
            raise NonFiniteLossError(
                f"the loss at step {bad[0][0]} is {bad[0][1]}: a forecast needs finite losses "
                f"(a diverged run cannot be extrapolated)"
            )
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])) or any(s < 0 for s in self.steps):
            raise ForecastError(
                f"steps {list(self.steps)[:8]}... must be increasing and >= 0 (a log of several "
                f"runs? keep one with where=)"
            )
        if not self.lrs or not all(math.isfinite(v) and v >= 0 for v in self.lrs) or max(self.lrs) <= 0:
            raise ForecastError(
                "lrs must give a finite, non-negative learning rate for every step of the run, and not all zero"
            )
        if self.steps and self.steps[-1] > len(self.lrs):
            raise ScheduleTooShortError(
                f"a loss at step {self.steps[-1]} but learning rates for "
                f"{len(self.lrs)} steps: give the rate of every step of the run"
            )
        for name in ("tokens_per_step", "parameters"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ForecastError(f"{name}={value!r} must be positive (or None)")

    @property
    def total_steps(self) -> int:
        """The planned length of the run."""
        return len(self.lrs)

    @property
    def fit_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The evaluations a fit uses: those after step 0 (before training, the areas are 0)."""
        steps = np.array([s for s in self.steps if s > 0], dtype=int)
        losses = np.array([v for s, v in zip(self.steps, self.losses) if s > 0])
        return steps, losses

    @property
    def initial_loss(self) -> float | None:
        """The loss before training, if step 0 was evaluated."""
        return self.losses[0] if self.steps and self.steps[0] == 0 else None

    def points_after(self, burn_in: float) -> tuple[np.ndarray, np.ndarray]:
        """The fitted evaluations: those after the first ``burn_in`` share of the run (the steep start, which
        the power law describes worst), keeping at least the last :data:`MIN_POINTS`."""
        steps, losses = self.fit_points
        first = int(np.searchsorted(steps, burn_in * self.total_steps, side="right"))
        first = min(first, max(len(steps) - MIN_POINTS, 0))
        return steps[first:], losses[first:]

    def head(self, last_step: int) -> "LearningCurve":
        """The evaluations up to ``last_step``, with the whole schedule kept (a run seen part-way)."""
        kept = [(s, v) for s, v in zip(self.steps, self.losses) if s <= last_step]
        return replace(self, steps=tuple(s for s, _ in kept), losses=tuple(v for _, v in kept))

    def loss_at(self, step: int) -> float:
        """The evaluated loss at ``step`` (a KeyError if it was not evaluated)."""
        return self.losses[self.steps.index(step)]

    @classmethod
    def simulate(
        cls,
        lrs: Sequence[float],
        L0: float,
        A: float,
        alpha: float,
        C: float,
        decay: float = 0.99,
        every: int = 10,
        noise: float = 0.0,
        seed: int = 0,
    ) -> "LearningCurve":
        """A curve that follows the model exactly (plus Gaussian ``noise``), evaluated every ``every`` steps:
        for tests and for checking a prior."""
        s1, s2 = schedule_areas(lrs, decay)
        steps = np.arange(every, len(lrs) + 1, every)
        clean = L0 + A * s1[steps] ** -alpha - C * s2[steps]
        noisy = clean + np.random.default_rng(seed).normal(0.0, noise, len(steps)) if noise else clean
        return cls(tuple(steps), tuple(noisy), tuple(lrs), label="simulated")

    @classmethod
    def from_history(cls, history: "History", parameters: int | None = None) -> "LearningCurve":
        """A run of :func:`~subclone_viz.train.train`: its held-out losses and its settings' schedule."""
        config = history.config
        if not history.evals:
            raise ForecastError(f"the run {history.label!r} has no held-out evaluations: train with eval_batches")
        keys = ("steps", "lr", "warmup", "schedule", "final_lr_ratio", "decay_fraction")
        settings = TrainSettings(**{k: config[k] for k in keys if config.get(k) is not None})
        done = history.steps[-1] if history.steps else None
        per_step = done.seen / done.step if done is not None and done.step > 0 else None
        return cls(
            tuple(r.step for r in history.evals),
            tuple(r.loss for r in history.evals),
            tuple(settings.learning_rates()),
            tokens_per_step=per_step or None,
            parameters=parameters or config.get("parameters"),
            label=history.label,
        )

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike,
        *,
        step_column: str = "step",
        loss_column: str = "loss",
        lr_column: str | None = None,
        schedule: str | None = None,
        total_steps: int | None = None,
        warmup: int = 0,
        peak: float = 1.0,
        final_ratio: float = 0.0,
        decay_fraction: float = 0.2,
        where: Mapping[str, str] | None = None,
        tokens_per_step: float | None = None,
        parameters: int | None = None,
        label: str | None = None,
    ) -> "LearningCurve":
        """A curve from any trainer's CSV log.

        Rows with an empty loss are skipped (a log of training steps with held-out losses at some of them).
        The schedule is either ``lr_column`` (the rate of every step 1..N, where N is the last step in the file)
        or a named ``schedule`` ("cosine", "linear", "constant", "wsd") of ``total_steps`` with ``warmup``
        steps, ``peak`` rate, decay to ``final_ratio`` of the peak and, for "wsd", the last ``decay_fraction``
        of the steps after warmup decaying. ``where``: keep only rows whose columns hold these values (one
        run of a file holding several).
        """
        path = Path(path).expanduser()
        if (lr_column is None) == (schedule is None):
            raise ForecastError(
                "give either lr_column (the rate of every step in the log) or schedule= (with "
                "total_steps): the forecast needs the learning rate of every step"
            )
        rows = _csv_rows(path, [step_column, loss_column, *([lr_column] if lr_column else []), *(where or {})])
        rows = [r for r in rows if all(r[k] == v for k, v in (where or {}).items())]
        if not rows:
            raise ForecastError(f"{path}: no rows match {dict(where or {})}")
        try:
            points = sorted((int(float(r[step_column])), float(r[loss_column])) for r in rows if r[loss_column] != "")
            lrs = (
                _schedule_rates(schedule, total_steps, warmup, peak, final_ratio, decay_fraction)
                if schedule is not None
                else _column_rates(rows, step_column, lr_column)
            )
        except ValueError as error:
            raise DamagedFileError(f"{path}: {error}") from error
        return cls(
            tuple(s for s, _ in points),
            tuple(v for _, v in points),
            tuple(lrs),
            tokens_per_step=tokens_per_step,
            parameters=parameters,
            label=label or path.stem,
        )


def _csv_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a CSV file with every one of ``columns``; a missing file or column names the file."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DamagedFileError(f"{path} has no column(s) {missing}; its columns: {reader.fieldnames}")
            return list(reader)
    except FileNotFoundError as error:
        raise ForecastError(f"{path}: no such file") from error
    except (UnicodeDecodeError, csv.Error) as error:
        raise DamagedFileError(f"{path} is not a readable CSV file ({error})") from error


def _schedule_rates(kind: str, total: int | None, warmup: int, peak: float, final: float, decay: float) -> list:
    if kind not in SCHEDULES:
        raise ForecastError(f"schedule={kind!r} is not one of {', '.join(SCHEDULES)}")
    if not isinstance(total, int) or total < 1:
        raise ForecastError(f"total_steps={total!r}: a named schedule needs the run's planned length in steps")
    try:
        settings = TrainSettings(
            steps=total, lr=peak, warmup=warmup, schedule=kind, final_lr_ratio=final, decay_fraction=decay
        )
    except ValueError as error:
        raise ForecastError(str(error)) from error
    return settings.learning_rates()


def _column_rates(rows: list[dict[str, str]], step_column: str, lr_column: str) -> list[float]:
    rates = {int(float(r[step_column])): float(r[lr_column]) for r in rows if r[lr_column] != ""}
    last = max(rates, default=0)
    missing = [s for s in range(1, last + 1) if s not in rates]
    if missing:
        raise ValueError(
            f"column {lr_column!r} has no learning rate for step(s) {missing[:5]}: it needs every "
            f"step 1..{last} (or use a named schedule)"
        )
    return [rates[s] for s in range(1, last + 1)]


# --------------------------------------------------------------------------------------------------------
# The prior and the forecast record


@register_record
@dataclass
class ForecastPrior(Record):
    """What early points cannot tell: the annealing coefficient, the momentum of the annealing area, and how
    wide the intervals must be to hold the truth at their nominal level."""

    FORMAT = "subclone_viz.forecast_prior"
    VERSION = 1

    C: float  # nats per unit of annealing area (rates divided by their peak)
    decay: float = 0.99  # momentum of the annealing area, per step
    C_spread: float = 0.0  # the standard deviation of C across the calibration runs
    burn_in: float = 0.0  # evaluations in this first share of the run are not fitted
    scale: float = 1.0  # the intervals' width multiplier, calibrated on held-out runs
    level: float = NOMINAL_LEVEL
    fit_fraction: float = 0.25
    runs: int = 0
    source: str = ""
    alpha: float | None = None  # the exponent the calibration runs' whole curves have (their median), and
    alpha_width: float | None = None  # how far an early fit may stray from it (a Gaussian width in log alpha)

    def __post_init__(self) -> None:
        _check_number("C", self.C, 0.0)
        if (self.alpha is None) != (self.alpha_width is None):
            raise ValueError(f"alpha={self.alpha!r} and alpha_width={self.alpha_width!r}: give both or neither")
        if self.alpha is not None:
            _check_number("alpha", self.alpha, 1e-9)
            _check_number("alpha_width", self.alpha_width, 1e-9)
        _check_number("C_spread", self.C_spread, 0.0)
        _check_number("scale", self.scale, 0.0)
        if not 0.0 <= self.burn_in < 1.0:
            raise ValueError(f"burn_in={self.burn_in!r} must be in [0, 1)")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay={self.decay!r} must be in [0, 1)")
        if self.level not in _CHI2_1:
            raise ValueError(f"level={self.level!r}: choose one of {sorted(_CHI2_1)}")
        if not 0.0 < self.fit_fraction <= 1.0:
            raise ValueError(f"fit_fraction={self.fit_fraction!r} must be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _PRIOR_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ForecastPrior":
        values = {k: data[k] for k in _PRIOR_FIELDS if k not in ("alpha", "alpha_width") or k in data}
        if not isinstance(values["runs"], int) or not isinstance(values["source"], str):
            raise ValueError("'runs' must be an integer and 'source' a string")
        return cls(**values)

    @classmethod
    def fit(
        cls, curves: Sequence[LearningCurve], fit_fraction: float = 0.25, level: float = NOMINAL_LEVEL, source: str = ""
    ) -> "ForecastPrior":
        """Calibrate on full runs. For each burn-in of a small grid: ``decay`` and ``C`` from whole-curve fits
        (``C``: the median over runs) and each run's whole-curve exponent; then each run forecast from its first
        ``fit_fraction`` with ``C`` and the exponent prior (``alpha``: the others' median) from the others (leave
        one out), for each exponent-prior width (none, or a grid of widths). The burn-in and width with the least
        mean absolute error are kept, and the interval scale is the ``level`` quantile of |error| / raw
        half-width there (with a single run, in-sample: the scale is then optimistic)."""
        curves = list(curves)
        if not curves:
            raise ForecastError("ForecastPrior.fit needs at least one full run")
        for curve in curves:
            _check_points(curve)
        best: tuple[float, ForecastPrior, list[float]] | None = None
        for burn_in in _BURN_INS:
            for prior, errors, ratios in _calibrate(cls, curves, burn_in, fit_fraction, level, source):
                score = float(np.mean(errors)) if errors else math.inf
                if best is None or score < best[0]:  # ties keep the simpler: the earlier burn-in, no prior
                    best = (score, prior, ratios)
        _, prior, ratios = best
        return replace(prior, scale=max(float(np.quantile(ratios, level)) if ratios else 1.0, 1e-6))


def _calibrate(
    cls: type, curves: list[LearningCurve], burn_in: float, fit_fraction: float, level: float, source: str
) -> Iterator[tuple[ForecastPrior, list[float], list[float]]]:
    """At one burn-in, for each exponent-prior width: the prior, and its leave-one-out absolute errors and
    |error| / raw half-width."""
    decay, coefficients = _best_decay(curves, burn_in)
    prior = cls(
        C=float(np.median(coefficients)),
        decay=decay,
        C_spread=float(np.std(coefficients)),
        burn_in=burn_in,
        level=level,
        fit_fraction=fit_fraction,
        runs=len(curves),
        source=source or f"ForecastPrior.fit on {len(curves)} run(s)",
    )
    exponents = [_whole_alpha(curve, prior) for curve in curves]
    for width in _ALPHA_WIDTHS:
        errors, ratios = [], []
        for i, curve in enumerate(curves):
            others = [c for j, c in enumerate(coefficients) if j != i] or coefficients
            alphas = [a for j, a in enumerate(exponents) if j != i] or exponents
            held_out = replace(prior, C=float(np.median(others)), C_spread=float(np.std(others)), scale=1.0)
            if width is not None:
                held_out = replace(held_out, alpha=float(np.median(alphas)), alpha_width=width)
            try:
                guess = forecast(curve.head(_cut_step(curve, fit_fraction)), steps=curve.steps[-1], prior=held_out)
            except TooFewPointsError:
                continue
            errors.append(abs(curve.losses[-1] - guess.loss))
            ratios.append(errors[-1] / max(guess.high - guess.loss, 1e-9))
        chosen = prior if width is None else replace(prior, alpha=float(np.median(exponents)), alpha_width=width)
        yield chosen, errors, ratios


def _whole_alpha(curve: LearningCurve, prior: ForecastPrior) -> float:
    """The exponent of the least-squares fit of the whole curve, with the prior's annealing term."""
    steps, losses = curve.points_after(prior.burn_in)
    s1, s2 = schedule_areas(curve.lrs, prior.decay)
    alphas, _, _, sse = _fit_early(s1[steps], losses + prior.C * s2[steps])
    return float(alphas[int(np.argmin(sse))])


_PRIOR_FIELDS = (
    "C",
    "decay",
    "C_spread",
    "burn_in",
    "scale",
    "level",
    "fit_fraction",
    "runs",
    "source",
    "alpha",
    "alpha_width",
)


def _cut_step(curve: LearningCurve, fraction: float) -> int:
    """The last evaluated step within the first ``fraction`` of the run, keeping at least MIN_POINTS points."""
    steps, _ = curve.fit_points
    inside = [int(s) for s in steps if s <= fraction * curve.total_steps + 1e-9]
    return max(inside[-1] if inside else 0, int(steps[MIN_POINTS - 1]))


def _check_number(name: str, value: Any, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name}={value!r} must be a finite number >= {low}")


def _best_decay(curves: Sequence[LearningCurve], burn_in: float) -> tuple[float, list[float]]:
    """The momentum decay whose whole-curve fits leave the least squared error, and each run's C at it."""
    best: tuple[float, float, list[float]] | None = None
    for decay in _DECAYS:
        total, coefficients = 0.0, []
        for curve in curves:
            steps, losses = curve.points_after(burn_in)
            s1, s2 = schedule_areas(curve.lrs, decay)
            sse, coefficient = _fit_with_annealing(s1[steps], s2[steps], losses)
            total += sse
            coefficients.append(coefficient)
        if best is None or total < best[0]:
            best = (total, decay, coefficients)
    return best[1], best[2]


def _fit_with_annealing(s1: np.ndarray, s2: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
    """Least squares of L0 + A * s1^-alpha - C * s2 over the alpha grid, with A, C >= 0: (SSE, C)."""
    best = (math.inf, 0.0)
    for alpha in _ALPHAS[::2]:  # a coarser grid: this runs for every calibration run, decay and burn-in
        design = np.stack([np.ones_like(s1), s1**-alpha, -s2], axis=1)  # (n, 3): columns L0, A, C
        for kept in ((0, 1, 2), (0, 1), (0, 2), (0,)):  # the active sets of the two sign constraints
            solution = np.zeros(3)
            solution[list(kept)] = np.linalg.lstsq(design[:, kept], losses, rcond=None)[0]
            if solution[1] < 0 or solution[2] < 0:
                continue
            sse = float(np.sum((design @ solution - losses) ** 2))
            if sse < best[0]:
                best = (sse, float(solution[2]))
    return best


@register_record
@dataclass
class Forecast(Record):
    """A run's loss forecast at a horizon, with its interval at ``level``, and the fitted curve to draw."""

    FORMAT = "subclone_viz.forecast"
    VERSION = 1

    loss: float
    low: float
    high: float
    level: float
    horizon: int  # steps
    fitted_until: int  # the last evaluated step the fit used
    params: dict[str, float]  # L0, A, alpha, C, decay
    label: str = ""
    tokens: float | None = None  # the horizon in tokens, when the curve knows its tokens per step
    flops: float | None = None  # 6 x parameters x tokens, when it also knows its parameters
    curve_steps: list[int] = field(default_factory=list)  # the forecast path, for plots
    curve_loss: list[float] = field(default_factory=list)
    curve_low: list[float] = field(default_factory=list)
    curve_high: list[float] = field(default_factory=list)
    prior: str = ""  # where the prior came from

    def __post_init__(self) -> None:
        for name in ("loss", "low", "high"):
            _check_number(name, getattr(self, name), -math.inf)
        if not self.low <= self.loss <= self.high:
            raise ValueError(f"low={self.low}, loss={self.loss}, high={self.high} are not in order")
        if self.level not in _CHI2_1:
            raise ValueError(f"level={self.level!r}: choose one of {sorted(_CHI2_1)}")
        if not (isinstance(self.horizon, int) and isinstance(self.fitted_until, int) and self.horizon >= 1):
            raise ValueError(f"horizon={self.horizon!r} and fitted_until={self.fitted_until!r} must be step counts")
        if set(self.params) != {"L0", "A", "alpha", "C", "decay"}:
            raise ValueError(f"params {sorted(self.params)} must be L0, A, alpha, C, decay")
        for name, value in self.params.items():
            _check_number(f"params[{name!r}]", value, -math.inf)
        lengths = {len(self.curve_steps), len(self.curve_loss), len(self.curve_low), len(self.curve_high)}
        if len(lengths) != 1:
            raise ValueError("curve_steps, curve_loss, curve_low and curve_high must have one value per step")
        for name in ("curve_steps", "curve_loss", "curve_low", "curve_high"):
            for value in getattr(self, name):
                _check_number(name, value, -math.inf)
        for name in ("tokens", "flops"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FORECAST_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Forecast":
        values = {k: data[k] for k in _FORECAST_FIELDS}
        for name in ("curve_steps", "curve_loss", "curve_low", "curve_high"):
            if not isinstance(values[name], list):
                raise ValueError(f"{name!r} must be a list")
        if not isinstance(values["params"], dict):
            raise ValueError("'params' must be an object")
        return cls(**values)

    def summary(self) -> str:
        """One line: the forecast and its interval."""
        where = f"step {self.horizon:,}" + (f" ({self.tokens:,.0f} tokens)" if self.tokens else "")
        return (
            f"{self.label + ': ' if self.label else ''}{self.loss:.3f} nats at {where} "
            f"[{self.low:.3f}, {self.high:.3f}] ({self.level:.0%} interval; fitted on steps <= "
            f"{self.fitted_until:,})"
        )


_FORECAST_FIELDS = (
    "loss",
    "low",
    "high",
    "level",
    "horizon",
    "fitted_until",
    "params",
    "label",
    "tokens",
    "flops",
    "curve_steps",
    "curve_loss",
    "curve_low",
    "curve_high",
    "prior",
)

# ForecastPrior.fit on the 28 published modded-nanogpt runs of bench/data (GPT-2-style models of 12 x 768 to
# 52 x 1536, 1,875 to 20,344 steps, trapezoidal schedule; KellerJordan/modded-nanogpt, MIT), rounded; printed
# by bench/bench_forecast.py as "prior_all_runs". Its exponent prior (alpha, alpha_width) was chosen by
# leave-one-out on those runs: scored on folds it did not see, it took the MAE from 0.040 to 0.014 nats
# (docs/forecast.md). The library's own CPU runs were too short and noisy to calibrate a better one; calibrate
# your own setup with ForecastPrior.fit.
DEFAULT_PRIOR = ForecastPrior(
    C=0.00573,
    decay=0.95,
    C_spread=0.000545,
    burn_in=0.1,
    scale=1.35,
    level=NOMINAL_LEVEL,
    fit_fraction=0.25,
    runs=28,
    source="ForecastPrior.fit on 28 modded-nanogpt runs (bench/bench_forecast.py)",
    alpha=0.416,
    alpha_width=0.1,
)


# --------------------------------------------------------------------------------------------------------
# Fitting


def _check_points(curve: LearningCurve) -> None:
    steps, _ = curve.fit_points
    if len(steps) < MIN_POINTS:
        shown = ", ".join(str(s) for s in steps) or "none"
        raise TooFewPointsError(
            f"a forecast needs at least {MIN_POINTS} evaluations after step 0; this curve has "
            f"{len(steps)} (steps {shown})"
        )


def _horizon(curve: LearningCurve, steps: int | None, tokens: float | None, flops: float | None) -> int:
    """The horizon in steps, from whichever of steps, tokens or FLOPs was given (default: the run's end)."""
    given = [name for name, value in (("steps", steps), ("tokens", tokens), ("flops", flops)) if value is not None]
    if len(given) > 1:
        raise ForecastError(f"give one horizon, not {' and '.join(given)}")
    if flops is not None:
        if curve.parameters is None:
            raise ForecastError("a horizon in FLOPs needs the model's parameters (LearningCurve.parameters)")
        tokens = flops / (6.0 * curve.parameters)
    if tokens is not None:
        if curve.tokens_per_step is None:
            raise ForecastError("a horizon in tokens needs LearningCurve.tokens_per_step")
        steps = math.ceil(tokens / curve.tokens_per_step - 1e-9)
    steps = curve.total_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ForecastError(f"horizon {steps!r} steps: give a positive number of steps")
    if steps > curve.total_steps:
        raise ScheduleTooShortError(
            f"horizon at step {steps:,} but the learning rates stop at step "
            f"{curve.total_steps:,}: give the schedule of the whole run up to the horizon"
        )
    return int(steps)


def _fit_early(s1: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every alpha of the grid, refined around the best: the least-squares (L0, A >= 0) of
    y = L0 + A * s1^-alpha, and the SSE. Returns (alphas, L0s, As, SSEs), each (G,)."""
    alphas = _ALPHAS
    for _ in range(2):  # the coarse grid, then a fine one around its best
        x = s1[None, :] ** -alphas[:, None]  # (G, n)
        x_mean, y_mean = x.mean(axis=1), y.mean()
        centred = x - x_mean[:, None]
        slope = np.maximum((centred @ (y - y_mean)) / np.maximum((centred**2).sum(axis=1), 1e-300), 0.0)  # (G,)
        intercept = y_mean - slope * x_mean
        sse = ((intercept[:, None] + slope[:, None] * x - y[None, :]) ** 2).sum(axis=1)
        if alphas is not _ALPHAS:
            break
        best = int(np.argmin(sse))
        fine = np.linspace(_ALPHAS[max(best - 1, 0)], _ALPHAS[min(best + 1, len(_ALPHAS) - 1)], 81)
        alphas = np.sort(np.concatenate([_ALPHAS, fine]))
    return alphas, intercept, slope, sse


@dataclass(frozen=True)
class _Fit:
    """A curve's fit: the most likely (L0, A, alpha) and every alpha its points do not rule out, each with its
    least-squares L0 and A, and what widens the interval (the residual noise, the annealing already seen)."""

    prior: ForecastPrior
    alphas: np.ndarray  # (P,) the plausible exponents
    intercepts: np.ndarray  # (P,) their L0
    slopes: np.ndarray  # (P,) their A
    best: int  # the most likely one, an index into the three above
    noise: float
    fitted_from: int
    fitted_until: int
    fitted_annealing: float  # S2 at the last fitted step

    @property
    def params(self) -> dict[str, float]:
        return {
            "L0": float(self.intercepts[self.best]),
            "A": float(self.slopes[self.best]),
            "alpha": float(self.alphas[self.best]),
            "C": self.prior.C,
            "decay": self.prior.decay,
        }

    def at(self, s1: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The forecast and its interval's half-width where a schedule's areas are ``s1`` and ``s2`` (each
        (m,)). The half-width adds in quadrature the residual noise, the spread of the plausible exponents'
        forecasts, and the spread of C times the annealing beyond what the fitted points saw."""
        prior = self.prior
        x = s1[None, :] ** -self.alphas[:, None]  # (P, m)
        paths = self.intercepts[:, None] + self.slopes[:, None] * x - prior.C * s2[None, :]
        form = (paths.max(axis=0) - paths.min(axis=0)) / 2.0
        annealing = prior.C_spread * np.maximum(s2 - self.fitted_annealing, 0.0)
        return paths[self.best], prior.scale * np.sqrt(self.noise**2 + form**2 + annealing**2)


def _fit(curve: LearningCurve, prior: ForecastPrior) -> _Fit:
    """Fit ``curve``'s points after the prior's burn-in, with the prior's annealing coefficient."""
    fit_steps, losses = curve.points_after(prior.burn_in)
    s1, s2 = schedule_areas(curve.lrs, prior.decay)
    alphas, intercepts, slopes, sse = _fit_early(s1[fit_steps], losses + prior.C * s2[fit_steps])
    n = len(fit_steps)
    # Alphas the points (and the exponent prior) do not rule out: n * log(SSE / SSE_min) plus the prior's
    # penalty within the chi-square threshold of its least value.
    floor = max(float(sse.min()), 1e-12 * n)
    score = n * np.log(np.maximum(sse, floor) / floor)
    if prior.alpha is not None:
        score = score + ((np.log(alphas) - math.log(prior.alpha)) / prior.alpha_width) ** 2
    plausible = score - score.min() <= _CHI2_1[prior.level]
    return _Fit(
        prior=prior,
        alphas=alphas[plausible],
        intercepts=intercepts[plausible],
        slopes=slopes[plausible],
        best=int(np.argmin(score[plausible])),
        noise=math.sqrt(sse[int(np.argmin(score))] / max(n - 3, 1)),
        fitted_from=int(fit_steps[0]),
        fitted_until=int(fit_steps[-1]),
        fitted_annealing=float(s2[fit_steps[-1]]),
    )


def forecast(
    curve_or_history: "LearningCurve | History",
    steps: int | None = None,
    tokens: float | None = None,
    flops: float | None = None,
    prior: ForecastPrior | None = None,
) -> Forecast:
    """The loss at a horizon (steps, tokens or FLOPs; default: the end of the planned run), with its interval.

    Args:
        curve_or_history: a :class:`LearningCurve` or a :class:`~subclone_viz.train.History` (its
            :meth:`~subclone_viz.train.History.curve`).
        steps, tokens, flops: the horizon, at most one (FLOPs: 6 x parameters x tokens).
        prior: the annealing coefficient and interval calibration (default :data:`DEFAULT_PRIOR`).
    """
    curve = curve_or_history if isinstance(curve_or_history, LearningCurve) else curve_or_history.curve()
    prior = DEFAULT_PRIOR if prior is None else prior
    _check_points(curve)
    horizon = _horizon(curve, steps, tokens, flops)
    fit = _fit(curve, prior)
    s1, s2 = schedule_areas(curve.lrs, prior.decay)
    path = np.unique(np.concatenate([np.linspace(fit.fitted_from, horizon, 60).round().astype(int), [horizon]]))
    centre, half = fit.at(s1[path], s2[path])
    tokens_at = horizon * curve.tokens_per_step if curve.tokens_per_step else None
    return Forecast(
        loss=float(centre[-1]),
        low=float(centre[-1] - half[-1]),
        high=float(centre[-1] + half[-1]),
        level=prior.level,
        horizon=horizon,
        fitted_until=fit.fitted_until,
        params=fit.params,
        label=curve.label,
        tokens=tokens_at,
        flops=6.0 * curve.parameters * tokens_at if tokens_at and curve.parameters else None,
        curve_steps=[int(s) for s in path],
        curve_loss=[float(v) for v in centre],
        curve_low=[float(v) for v in centre - half],
        curve_high=[float(v) for v in centre + half],
        prior=prior.source,
    )


# --------------------------------------------------------------------------------------------------------
# Beyond the budget: when would a longer run of the same recipe reach a loss?


def stretch_schedule(lrs: Sequence[float], steps: int) -> np.ndarray:
    """``lrs`` resampled to a run of ``steps`` steps: warmup, decay and final ratio at the same fractions of
    the run, as a longer run of the same recipe would schedule them. (steps,)"""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ForecastError(f"steps={steps!r}: give a positive number of steps")
    rates = np.asarray(lrs, dtype=float)
    old = (np.arange(len(rates)) + 0.5) / len(rates)
    new = (np.arange(steps) + 0.5) / steps
    return np.interp(new, old, rates)


def _final_areas(lrs: np.ndarray, decay: float) -> tuple[float, float]:
    """``schedule_areas(lrs, decay)`` at the run's end, without the per-step loop: a drop before step ``j``
    adds ``(1 - decay ** (n - j)) / (1 - decay)`` to the annealing area of an ``n``-step run."""
    eta = lrs / float(np.max(lrs))
    drops = np.maximum(0.0, np.concatenate([[0.0], eta[:-1] - eta[1:]]))
    remaining = len(eta) - np.arange(len(eta))  # (n,) steps from each drop to the end, itself included
    weights = (1.0 - decay ** remaining.astype(float)) / (1.0 - decay)
    return float(eta.sum()), float(drops @ weights)


@dataclass(frozen=True)
class Reach:
    """When a run of the same recipe, its schedule stretched to a longer length, would end at ``target``.

    ``steps``: the shortest such run by the forecast; ``earliest`` and ``latest``: by the two ends of its
    interval at ``level``. None: not within ``searched_to`` steps. ``budget``: the length of the measured run."""

    target: float
    steps: int | None
    earliest: int | None
    latest: int | None
    budget: int
    searched_to: int
    level: float
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _REACH_FIELDS}

    def summary(self) -> str:
        """One line, marked as a forecast: where the run would reach the target, in steps and budgets."""

        def where(steps: int | None) -> str:
            return f"beyond {self.searched_to:,}" if steps is None else f"{steps:,}"

        head = f"{self.label + ' ' if self.label else ''}reaches {self.target:.3f} nats"
        if self.steps is not None and self.steps <= self.budget:
            return f"{head} within its own budget of {self.budget:,} steps (forecast)"
        if self.steps is None:
            return (
                f"{head} only beyond {self.searched_to:,} steps ({self.searched_to / self.budget:.0f}x the budget), "
                f"forecast; {self.level:.0%} interval from {where(self.earliest)} steps"
            )
        return (
            f"{head} after {self.steps:,} steps ({self.steps / self.budget:.1f}x the budget), forecast; "
            f"{self.level:.0%} interval {where(self.earliest)} to {where(self.latest)} steps"
        )


_REACH_FIELDS = ("target", "steps", "earliest", "latest", "budget", "searched_to", "level", "label")


def steps_to_reach(
    curve_or_history: "LearningCurve | History",
    target: float,
    prior: ForecastPrior | None = None,
    max_factor: float = 100.0,
) -> Reach:
    """How long a run of the same recipe would train to end at ``target`` loss, from a forecast.

    The curve is fitted once (all its points after the prior's burn-in); each candidate length (a geometric
    grid from the run's own length to ``max_factor`` times it) has the run's schedule stretched to it
    (:func:`stretch_schedule`) and its end forecast. For a baseline that never reached another run's loss
    within the budget: how far beyond the budget it would, and how sure that is.

    Args:
        curve_or_history: the measured run, a :class:`LearningCurve` or a :class:`~subclone_viz.train.History`.
        target: the loss to reach, in nats.
        prior: as for :func:`forecast` (default :data:`DEFAULT_PRIOR`).
        max_factor: the longest run searched, as a multiple of the measured run's length (> 1).
    """
    curve = curve_or_history if isinstance(curve_or_history, LearningCurve) else curve_or_history.curve()
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise ForecastError(f"target={target!r}: give a finite loss in nats")
    if isinstance(max_factor, bool) or not isinstance(max_factor, (int, float)) or not 1.0 < max_factor < 1e6:
        raise ForecastError(f"max_factor={max_factor!r}: give a number above 1 (the longest run, in budgets)")
    prior = DEFAULT_PRIOR if prior is None else prior
    _check_points(curve)
    fit = _fit(curve, prior)
    budget = curve.total_steps
    lengths = np.unique(np.geomspace(budget, budget * max_factor, 400).round().astype(int))
    areas = np.array([_final_areas(stretch_schedule(curve.lrs, int(n)), prior.decay) for n in lengths])  # (m, 2)
    centre, half = fit.at(areas[:, 0], areas[:, 1])

    def first(losses: np.ndarray) -> int | None:
        below = np.flatnonzero(losses <= target)
        return int(lengths[below[0]]) if below.size else None

    return Reach(
        target=float(target),
        steps=first(centre),
        earliest=first(centre - half),
        latest=first(centre + half),
        budget=budget,
        searched_to=int(lengths[-1]),
        level=prior.level,
        label=curve.label,
    )
