"""subclone_viz: weight subcloning of transformers, with the plots and widgets to see why it works.

Start a small transformer from the weights of a larger pretrained one (Samragh et al., 2023): profile the
parent, plan which layers, channels, neurons and heads to keep, slice them out, save an ordinary checkpoint
and train it several times faster than from random initialization.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, split="heldout")
    >>> prof = sv.profile(parent, batches, max_tokens=512, progress=False)   # 8,192 tokens or more for real use
    >>> plan = sv.plan(parent, prof, sv.DestinationSpec(layers=6, hidden=192))
    >>> destination = sv.subclone(parent, plan)
    >>> sv.save_destination(destination, plan, "smollm2-6x192")
    PosixPath('smollm2-6x192')
"""

import importlib
import sys
import types
from typing import Any

from ._version import __version__  # noqa: F401  (the package version, read by the CLI and the wheel test)

# Where each public name lives. Importing the package imports none of these modules (most import torch, which
# takes seconds): ``sv.load_parent`` imports :mod:`subclone_viz.parent` on first use, so that the command
# line's --help and ``import subclone_viz`` answer at once.
_LAZY = {
    "cache_dir": "data",
    "image_batches": "data",
    "text_batches": "data",
    "Dims": "families",
    "UnsupportedArchitectureError": "families",
    "family_of": "families",
    "supported_families": "families",
    "Parent": "parent",
    "ParentLoadError": "parent",
    "load_parent": "parent",
    "Profile": "profile",
    "ProfileMismatchError": "profile",
    "RankConsistency": "profile",
    "add_taylor": "profile",
    "profile": "profile",
    "ESTIMATORS": "importance",
    "Importance": "importance",
    "estimate_importance": "importance",
    "DestinationSpec": "plan",
    "SpecError": "plan",
    "SubclonePlan": "plan",
    "plan": "plan",
    "spec_choices": "plan",
    "random_init": "subclone",
    "subclone": "subclone",
    "BlockAblation": "evaluate",
    "Evaluation": "evaluate",
    "block_ablation": "evaluate",
    "evaluate": "evaluate",
    "save_destination": "export",
    "History": "train",
    "TrainSettings": "settings",
    "ProfileSettings": "settings",
    "PlanStrategy": "settings",
    "train": "train",
    "Comparison": "compare",
    "Speedup": "compare",
    "compare": "compare",
    "speedup": "compare",
    "vit_digits_parent": "vision",
    "SizeGrid": "sizing",
    "default_grid_axes": "sizing",
    "size_grid": "sizing",
    "TokenTrace": "trace",
    "token_trace": "trace",
    "Stability": "stability",
    "stability": "stability",
    "SpeedupStudy": "study",
    "speedup_study": "study",
    "default_destination": "workflow",
    "parent_batches": "workflow",
    "quick_mode": "workflow",
    "NoTokenizerError": "cut",
    "PlanMismatchError": "cut",
    "LogitLens": "lens",
    "logit_lens": "lens",
    "LayerSimilarity": "similarity",
    "layer_similarity": "similarity",
    "GenerationError": "outputs",
    "Generations": "outputs",
    "TokenLosses": "outputs",
    "generate": "outputs",
    "token_losses": "outputs",
    "Forecast": "forecast",
    "ForecastPrior": "forecast",
    "LearningCurve": "forecast",
    "forecast": "forecast",
    "Reach": "forecast",
    "steps_to_reach": "forecast",
    "BudgetGrid": "budget",
    "budget_grid": "budget",
}


# Modules that register a parent source with subclone_viz.parent from a layer above it (the digits ViT):
# imported with the first public name, so that sv.load_parent("vit-digits") finds its source.
_REGISTERING = ("vision",)


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first access, and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'subclone_viz' has no attribute {name!r}")
    for registering in _REGISTERING:
        importlib.import_module(f".{registering}", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """The package's module type: a public function keeps its name when its module of the same name loads.

    Importing ``subclone_viz.plan`` binds the module to ``subclone_viz.plan``; ``sv.plan``, ``sv.profile``,
    ``sv.compare``... must stay the functions, as they were when this file imported everything at once.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "DestinationSpec",
    "ESTIMATORS",
    "add_taylor",
    "Importance",
    "Stability",
    "SpeedupStudy",
    "speedup_study",
    "estimate_importance",
    "stability",
    "BlockAblation",
    "Comparison",
    "Dims",
    "Evaluation",
    "History",
    "Parent",
    "ParentLoadError",
    "PlanStrategy",
    "Profile",
    "ProfileMismatchError",
    "ProfileSettings",
    "RankConsistency",
    "SpecError",
    "Speedup",
    "SubclonePlan",
    "TrainSettings",
    "UnsupportedArchitectureError",
    "block_ablation",
    "cache_dir",
    "compare",
    "evaluate",
    "family_of",
    "image_batches",
    "load_parent",
    "plan",
    "profile",
    "save_destination",
    "spec_choices",
    "speedup",
    "subclone",
    "supported_families",
    "text_batches",
    "train",
    "vit_digits_parent",
    "SizeGrid",
    "TokenTrace",
    "default_grid_axes",
    "size_grid",
    "token_trace",
    "default_destination",
    "parent_batches",
    "quick_mode",
    "random_init",
    "NoTokenizerError",
    "PlanMismatchError",
    "LogitLens",
    "logit_lens",
    "LayerSimilarity",
    "layer_similarity",
    "GenerationError",
    "Generations",
    "TokenLosses",
    "generate",
    "token_losses",
    "Forecast",
    "ForecastPrior",
    "LearningCurve",
    "forecast",
    "Reach",
    "steps_to_reach",
    "BudgetGrid",
    "budget_grid",
]
