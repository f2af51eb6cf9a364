"""Architecture adapters, one module per family; :func:`family_of` picks the one that fits a model.

Adding a family means adding one module with a :class:`~subclone_viz.families.base.Family` subclass, listing
it in ``FAMILIES`` and adding a tiny config to the parametrized tests.
"""

from __future__ import annotations

from torch import nn

from .base import Dims, Family, ParamInfo, ParamRule, UnsupportedParameterError
from .bert import BertFamily
from .gpt2 import GPT2Family
from .llama import LlamaFamily
from .vit import TimmViTFamily

FAMILIES: tuple[type[Family], ...] = (GPT2Family, LlamaFamily, BertFamily, TimmViTFamily)


class UnsupportedArchitectureError(ValueError):
    pass


def supported_families() -> str:
    return ", ".join(f"{f.name} ({f.description})" for f in FAMILIES)


def family_of(model: nn.Module) -> Family:
    """The adapter for ``model``; raises :class:`UnsupportedArchitectureError` naming the supported families."""
    for family in FAMILIES:
        if family.matches(model):
            return family(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    what = type(model).__name__ + (f" (model_type {model_type!r})" if model_type else "")
    raise UnsupportedArchitectureError(
        f"unsupported architecture {what}; supported families: {supported_families()}. Causal LMs need their LM "
        f"head (load with AutoModelForCausalLM)"
    )


__all__ = [
    "FAMILIES",
    "Dims",
    "Family",
    "ParamInfo",
    "ParamRule",
    "UnsupportedArchitectureError",
    "UnsupportedParameterError",
    "family_of",
    "supported_families",
]
