"""Initializations and the learning rates each one trains at: names and numbers only, importable without torch.

A speedup over random init is only as honest as random init's learning rate. The paper trains GPT-2 from
random init and from a subclone both at 1e-4 (its Table 1), but this project's speedup study found random
init best at 1e-3 to 3e-3 at the budgets a lesson or a quick comparison can afford, so a comparison at the
paper's rates measures a slowed-down baseline. The table here is the one place the per-initialization
defaults live; :func:`~subclone_viz.compare.compare`, the report, the studio widget and the command line all
read it, and every figure they show names the rates behind it and where they came from:

* ``"tuned"`` (the default): the best rate of the learning-rate sweeps measured in
  ``bench/results/speedup_study/study.json`` and ``bench/results/compare_smollm2/results.json`` (SmolLM2-135M,
  the builtin Python docs, 60 and 100 steps): random init 3e-3, an inherited start 1e-3. These suit runs of a
  lesson's length; at ten times the tokens (``bench/results/speedup_study_300k``, 300 steps of 1,024 tokens)
  random init did best at 1e-3 at both sizes swept (3e-4 and 3e-3 ended higher), so sweep a longer run's rates
  (``subclone-viz study``) or pass them. Vision has not been swept here, so it keeps the paper's rates;
* ``"paper"``: the paper's Table 1: for language models 1e-4 from random and from an inherited start; for
  vision 2e-3 and 1e-4.

Weight decay is the paper's in both presets (0.1 from random, 0.001 inherited; 0.2 and 0.005 for vision): the
sweeps varied the learning rate only. A ``+distill`` init trains at its start's rate, as in the study.

Example::

    >>> from subclone_viz.inits import INITS, default_hyperparameters, hyperparameter_source
    >>> list(INITS)[:3]
    ['random', 'subclone', 'subclone-calibrated']
    >>> default_hyperparameters("causal-lm", "random"), default_hyperparameters("causal-lm", "subclone")
    ((0.003, 0.1), (0.001, 0.001))
    >>> default_hyperparameters("causal-lm", "random", preset="paper")     # the paper's Table 1
    (0.0001, 0.1)
    >>> hyperparameter_source("causal-lm", "random")
    'tuned: best of the sweep in bench/results/speedup_study (SmolLM2-135M, 3 sizes, 60 steps)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Init:
    """How a destination starts, and whether it also learns from the parent as its teacher."""

    strategies: Mapping[str, str] | None  # plan(depth=, width=, scaling=); None: the architecture's random init
    distill: bool = False  # train with the parent as teacher (TrainSettings.distill_alpha, distill_temperature)


_PAPER = dict(depth="middle", width="importance", scaling="sqrt")

# Every initialization compare() knows, by name.
INITS: dict[str, Init] = {
    "random": Init(None),
    "subclone": Init(_PAPER),
    "subclone-calibrated": Init(dict(_PAPER, scaling="calibrated")),
    "no-scaling": Init(dict(_PAPER, scaling="none")),
    "no-reorder": Init(dict(_PAPER, width="first")),
    "uniform": Init(dict(_PAPER, width="uniform", scaling="none")),
    "subclone+distill": Init(_PAPER, distill=True),
    "random+distill": Init(None, distill=True),
}


@dataclass(frozen=True)
class Hyperparameters:
    """A learning rate and weight decay, and where they come from (shown beside every speedup)."""

    lr: float
    weight_decay: float
    source: str


DEFAULT_LR_PRESET = "tuned"

_PAPER_SOURCE = "paper: Samragh et al. (2023), Table 1"
_STUDY = "tuned: best of the sweep in bench/results/speedup_study (SmolLM2-135M, 3 sizes, 60 steps)"
_VISION_UNTUNED = "paper: Samragh et al. (2023), Table 1 (no vision sweep here to tune it)"

# (preset, regime, start) -> rates. Regime: "language" or "vision"; start: "random" or "inherited" (a subclone).
# Tuned language rates, measured (held-out loss after the budget, lower is better):
#   random init, sweep 1e-3 / 3e-3: 24x480 6.94 / 6.89, 20x384 6.97 / 6.92, 8x288 6.83 / 6.84 (60 steps);
#     8x288 at 100 steps 6.62 / 6.56 (bench/results/compare_smollm2). 3e-3 wins 3 of 4, 1e-3 by 0.005 nats once.
#   subclone, sweep 3e-4 / 1e-3: 24x480 3.94 / 4.17, 20x384 4.90 / 4.70, 8x288 6.49 / 6.10 (60 steps);
#     8x288 at 100 steps 1e-4 / 1e-3: 6.63 / 5.51. 1e-3 wins 3 of 4.
HYPERPARAMETERS: dict[str, dict[str, dict[str, Hyperparameters]]] = {
    "tuned": {
        "language": {"random": Hyperparameters(3e-3, 0.1, _STUDY), "inherited": Hyperparameters(1e-3, 0.001, _STUDY)},
        "vision": {
            "random": Hyperparameters(2e-3, 0.2, _VISION_UNTUNED),
            "inherited": Hyperparameters(1e-4, 0.005, _VISION_UNTUNED),
        },
    },
    "paper": {
        "language": {
            "random": Hyperparameters(1e-4, 0.1, _PAPER_SOURCE),
            "inherited": Hyperparameters(1e-4, 0.001, _PAPER_SOURCE),
        },
        "vision": {
            "random": Hyperparameters(2e-3, 0.2, _PAPER_SOURCE),
            "inherited": Hyperparameters(1e-4, 0.005, _PAPER_SOURCE),
        },
    },
}
LR_PRESETS = tuple(HYPERPARAMETERS)


def hyperparameters(task: str, init: str, preset: str = DEFAULT_LR_PRESET) -> Hyperparameters:
    """The rates ``init`` trains at for a family task (``"causal-lm"``, ``"image-classification"``...) under
    ``preset`` (``"tuned"`` or ``"paper"``)."""
    if preset not in HYPERPARAMETERS:
        raise ConfigurationError(f"lr_preset={preset!r} is not a preset: choose one of {', '.join(LR_PRESETS)}")
    if init not in INITS:
        raise ConfigurationError(f"init={init!r} is not an initialization: choose one of {', '.join(INITS)}")
    regime = "vision" if task == "image-classification" else "language"
    start = "random" if INITS[init].strategies is None else "inherited"
    return HYPERPARAMETERS[preset][regime][start]


def default_hyperparameters(task: str, init: str, preset: str = DEFAULT_LR_PRESET) -> tuple[float, float]:
    """(learning rate, weight decay) of ``init`` for a family task under ``preset``."""
    chosen = hyperparameters(task, init, preset)
    return chosen.lr, chosen.weight_decay


def hyperparameter_source(task: str, init: str, preset: str = DEFAULT_LR_PRESET) -> str:
    """Where the default rates of ``init`` come from, in a few words."""
    return hyperparameters(task, init, preset).source


__all__ = [
    "DEFAULT_LR_PRESET",
    "HYPERPARAMETERS",
    "INITS",
    "LR_PRESETS",
    "Hyperparameters",
    "Init",
    "default_hyperparameters",
    "hyperparameter_source",
    "hyperparameters",
]
