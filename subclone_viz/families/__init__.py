"""Architecture adapters, one module per family; :func:`family_of` picks the one that fits a model.

Adding a family (one file and one tiny config):

1. ``subclone_viz/families/<name>.py``: a subclass of :class:`CausalLMFamily` (or ``Family`` /
   ``ImageClassifierFamily``) with class attributes:

   * ``name``, ``description``; ``model_types``, the ``config.model_type`` values it accepts (the loader
     reads the same list to pick ``auto_class``); ``head``, a module the task needs (``"lm_head"``);
   * ``block_list`` (``"model.layers"``) and the module roles, paths relative to a block:
     ``ffn_activation`` (the module whose input is the FFN activation, ``"mlp.down_proj"``),
     ``attention_output`` (input = per-head attention output, ``"self_attn.o_proj"``), and for post-norm
     blocks ``residual_sum`` (the norm whose input is x + f(x));
   * ``rules``: one :class:`ParamRule` per parameter pattern, every axis named with a kind from
     :mod:`.axes` (add a kind there if the layout is new) and the fan-in axis of each linear weight;
   * ``config_fields`` when the config does not use Llama's names, and ``heads_follow_hidden = False`` when
     ``head_dim`` is a config field of its own;
   * ``derived_buffers`` for buffers computed from the widths; override ``dims``/``build``/``logits``/``loss``
     only when the data cannot say it.

   * ``tiny_models()``: tiny random models of every claimed model_type (the one tiny config). The family
     battery in ``tests/unit/test_subclone.py``, ``test_profile.py`` and ``test_capture.py`` runs on every
     registered family's tiny models and fails for a family without them.

2. Decorate the class with ``@register_family`` and import its module in this package's ``__init__`` (a
   plugin package registers from its own module or through the ``subclone_viz.families`` entry point), and
   add it to the docs' families table.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .axes import AXES, axis_indices
from .base import (
    TINY_VOCAB,
    CausalLMFamily,
    Dims,
    Family,
    ImageClassifierFamily,
    ParamInfo,
    ParamRule,
    UnsupportedParameterError,
)

# Importing each family module registers it; this order is the order family_of tries them in.
from . import gpt2, llama, gemma, phi3, olmo2, gpt_neox, bert, vit, hf_vit  # noqa: E401, F401, I001
from . import mixtral, qwen_moe, olmoe, gpt_oss, deepseek_v3  # noqa: E401, F401, I001
from .registry import FAMILIES, register_family


class UnsupportedArchitectureError(UserError, ValueError):
    pass


def supported_families() -> str:
    return ", ".join(f"{f.name} ({f.description})" for f in FAMILIES.values())


def auto_class_name(model_type: str) -> str | None:
    """The transformers Auto class that loads a model of this ``model_type``, None when no family claims it."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.auto_class
    return None


def family_of(model: nn.Module) -> Family:
    """The adapter for ``model``; raises :class:`UnsupportedArchitectureError` naming the supported families."""
    for family in FAMILIES.values():
        if family.matches(model):
            return family(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    what = type(model).__name__ + (f" (model_type {model_type!r})" if model_type else "")
    raise UnsupportedArchitectureError(
        f"unsupported architecture {what}; supported families: {supported_families()}. Causal LMs need their LM "
        f"head (load with AutoModelForCausalLM)"
    )


__all__ = [
    "AXES",
    "FAMILIES",
    "TINY_VOCAB",
    "CausalLMFamily",
    "Dims",
    "Family",
    "ImageClassifierFamily",
    "ParamInfo",
    "ParamRule",
    "UnsupportedArchitectureError",
    "UnsupportedParameterError",
    "auto_class_name",
    "axis_indices",
    "family_of",
    "register_family",
    "supported_families",
]
