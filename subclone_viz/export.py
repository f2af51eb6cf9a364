"""Saving a destination as an ordinary checkpoint, with a record of how it was made.

A Hugging Face destination is written with ``save_pretrained`` (safetensors) and its tokenizer, so
``AutoModelForCausalLM.from_pretrained(directory)`` loads it; a timm destination as ``model.safetensors``
with a ``config.json`` that ``timm.create_model("local-dir:DIR", pretrained=True)`` reads. Beside it:
``subclone.json`` (the parent, the profile's data source and token count, the plan, the scaling and its
factors, the library version) and a short model card, ``README.md``. The directory is written atomically:
everything goes into a temporary sibling directory that is renamed into place, so a failure leaves nothing
half-written, and an existing non-empty directory is only replaced with ``overwrite=True``.

Example::

    path = save_destination(child, p, "runs/smollm2-20x384")
    AutoModelForCausalLM.from_pretrained(path)      # or sv.load_parent(path)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__, distributed
from ._atomic import staged_directory
from .families import family_of
from .plan import SubclonePlan


def save_destination(
    model: nn.Module,
    plan: SubclonePlan,
    directory: str | os.PathLike,
    overwrite: bool = False,
    processor: Any = None,
) -> Path:
    """Write ``model`` (from :func:`~subclone_viz.subclone`) and its provenance to ``directory``.

    Args:
        model: the destination.
        plan: the plan it was made with.
        directory: where to write; created with its parents.
        overwrite: replace an existing non-empty directory.
        processor: the tokenizer or image preprocessing to save with it (default: the parent's, which
            :func:`~subclone_viz.subclone` attaches to the model).

    Under several processes only the main one writes; every process returns the path (or raises its error).
    """
    return distributed.on_main(_write_destination, model, plan, directory, overwrite, processor)


def _write_destination(model: nn.Module, plan: SubclonePlan, directory, overwrite: bool, processor: Any) -> Path:
    family = family_of(model)
    processor = processor if processor is not None else getattr(model, "subclone_processor", None)
    with staged_directory(directory, overwrite) as staging:
        family.save(model, str(staging), processor)
        info = getattr(model, "subclone_info", {})
        record = {
            "library": "subclone_viz",
            "version": __version__,
            "parent": plan.parent,
            "profile": {"source": plan.profile_source, "tokens": plan.profile_tokens},
            "scaling": plan.scaling,
            "scales": info.get("scales", {}),
            "plan": plan.to_dict(),
            "family": family.name,
            **family.extra_state(model),
        }
        (staging / "subclone.json").write_text(json.dumps(record, indent=1))
        (staging / "README.md").write_text(model_card(model, plan))
    return Path(directory).expanduser()


def model_card(model: nn.Module, plan: SubclonePlan) -> str:
    family = family_of(model)
    params = sum(p.numel() for p in model.parameters())
    load = (
        'timm.create_model("local-dir:<this directory>", pretrained=True)'
        if family.library == "timm"
        else f"transformers.{family.auto_class}.from_pretrained(\"<this directory>\")"
    )
    profile = (
        f"{plan.profile_tokens:,} tokens of {plan.profile_source}" if plan.profile_tokens else "no profile (data-free)"
    )
    return f"""---
library_name: {family.library}
tags: [subclone_viz, weight-subcloning]
---
# Subcloned from {plan.parent['name']}

A {family.describe(model)}, initialized by weight subcloning (Samragh et al., 2023) from
**{plan.parent['name']}** ({plan.parent.get('description', '')}). It has not been trained after subcloning:
train it (with a lower learning rate than from scratch) before use.

- Layers: {plan.dims['layers']}, from parent blocks {plan.layers}
- Widths: hidden {plan.dims['hidden']}, FFN {plan.dims['ffn']}, {plan.dims['heads']} heads / {plan.dims['kv_heads']} KV heads
- Strategies: depth `{plan.depth}`, width `{plan.width}`, scaling `{plan.scaling}`
- Neuron importance measured on: {profile}
- Parameters: {params / 1e6:.2f}M
- Made with subclone_viz {__version__}; `subclone.json` records the exact indices kept.

Load it with `{load}`.
"""
