"""Saving a destination as an ordinary checkpoint, with a record of how it was made.

A Hugging Face destination is written with ``save_pretrained`` (safetensors) and its tokenizer, so
``AutoModelForCausalLM.from_pretrained(directory)`` loads it; a timm destination as ``model.safetensors``
with a ``config.json`` that ``timm.create_model("local-dir:DIR", pretrained=True)`` reads. Beside it:
``subclone.json`` (the parent, the profile's data source and token count, the plan, the scaling and its
factors, the library version) and a short model card, ``README.md``, whose front matter carries the parent's
provenance where it is known (``base_model``, ``license``, and for an embedded GGUF parent its alias, package and
quantization) and the plan's summary. The directory is written atomically:
everything goes into a temporary sibling directory that is renamed into place, so a failure leaves nothing
half-written, and an existing non-empty directory is only replaced with ``overwrite=True``.

Example::

    >>> import yaml
    >>> from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    >>> import subclone_viz as sv
    >>> config = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=6,
    ...                      num_key_value_heads=2, vocab_size=100)
    >>> parent = sv.load_parent(LlamaForCausalLM(config), device="cpu")
    >>> p = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=24), width="uniform")
    >>> path = sv.save_destination(sv.subclone(parent, p), p, "llama-2x24")
    >>> AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers      # or sv.load_parent(path)
    2
    >>> {"README.md", "subclone.json", "model.safetensors", "config.json"} <= {f.name for f in path.iterdir()}
    True
    >>> card = yaml.safe_load((path / "README.md").read_text().split("---")[1])
    >>> card["subclone_viz"]["plan"]
    '2 layers (parent blocks [0, 3]), hidden 24, FFN 48, 3 heads / 1 KV; depth=middle, width=uniform, scaling=sqrt'

    A parent loaded from an embedded alias, a hub id or a model directory with a card also puts ``base_model``
    and ``license`` in the card's front matter (``sv.load_parent("gemma3-270m")``: ``google/gemma-3-270m``,
    ``gemma``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from . import distributed
from ._atomic import DamagedFileError, read_json, staged_directory
from ._version import __version__
from .families import family_of
from .plan import SubclonePlan
from .readers import register_reader

# timm's pretrained_cfg fields that describe how a checkpoint was pretrained. A destination saved with the parent's
# would claim that pretraining as its own (timm names a checkpoint "architecture.tag"), so they are dropped; the
# parent's identity is in the model card and subclone.json instead.
TIMM_PRETRAINING_FIELDS = ("tag", "description", "origin_url", "paper_name", "paper_ids", "notes")


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
        _drop_parent_pretraining(staging / "config.json")
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


def read_subclone_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record :func:`save_destination` wrote to a destination's ``subclone.json``, with its ``plan`` read back
    as a :class:`~subclone_viz.plan.SubclonePlan`; a damaged or hand-edited file raises
    :class:`~subclone_viz._atomic.DamagedFileError` naming it and what is wrong."""
    path = Path(path).expanduser()
    record = read_json(path, dict)
    if record.get("library") != "subclone_viz":
        raise DamagedFileError(
            f"{path} is not a subclone_viz destination record (its 'library' is {record.get('library')!r})"
        )
    parent = record.get("parent")
    if not isinstance(parent, dict) or not isinstance(parent.get("name"), str):
        raise DamagedFileError(f"{path}: 'parent' must be an object with the parent's name")
    if not isinstance(record.get("family"), str) or not isinstance(record.get("scales"), dict):
        raise DamagedFileError(f"{path}: 'family' must be a name and 'scales' an object")
    try:
        plan = SubclonePlan.from_dict(record.get("plan"))
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise DamagedFileError(f"{path}: its plan is not a valid subclone plan ({error})") from error
    return {**record, "plan": plan}


def _drop_parent_pretraining(config_path: Path) -> None:
    """Remove the parent's pretraining record from a timm ``config.json`` (other configs have none)."""
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    pretrained_cfg = config.get("pretrained_cfg")
    if not isinstance(pretrained_cfg, dict):
        return
    for key in TIMM_PRETRAINING_FIELDS:
        pretrained_cfg.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2))


def model_card(model: nn.Module, plan: SubclonePlan) -> str:
    """The destination's ``README.md``: Hugging Face front matter (provenance, plan) and a short description.

    The front matter holds ``base_model`` and ``license`` only when the parent's are known (an embedded alias,
    a hub id, or a local directory whose own card says them), and every line of the card is said once.
    """
    family = family_of(model)
    parent = plan.parent
    provenance = parent.get("provenance", {})
    params = sum(p.numel() for p in model.parameters())
    front: dict[str, Any] = {"library_name": family.library}
    front.update({key: provenance[key] for key in ("base_model", "license") if key in provenance})
    front["tags"] = ["subclone_viz", "weight-subcloning"]
    front["subclone_viz"] = {
        "parent": parent["name"],
        **{f"parent_{key}": value for key, value in provenance.items() if key not in ("base_model", "license")},
        "plan": plan.summary(),
        "version": __version__,
    }
    load = (
        'timm.create_model("local-dir:<this directory>", pretrained=True)'
        if family.library == "timm"
        else f'transformers.{family.auto_class}.from_pretrained("<this directory>")'
    )
    profile = (
        f"{plan.profile_tokens:,} tokens of {plan.profile_source}" if plan.profile_tokens else "no profile (data-free)"
    )
    origin = f"**{parent['name']}** ({parent.get('description', '')})"
    if "weights" in provenance:
        origin += f", whose weights are {provenance['weights']}"
    licence = (
        f"\nThe weights are sliced from the parent's, so the parent's licence applies (`{provenance['license']}`): "
        f"{provenance.get('license_terms', 'see the parent model card')}.\n"
        if "license" in provenance
        else ""
    )
    return f"""---
{yaml.safe_dump(front, sort_keys=False, width=120).strip()}
---
# Subcloned from {parent["name"]}

A {family.describe(model)}, initialized by weight subcloning (Samragh et al., 2023) from {origin}.
It has not been trained after subcloning: train it (with a lower learning rate than from scratch) before use.
{licence}
- Layers: {plan.dims["layers"]}, from parent blocks {plan.layers}
- Widths: hidden {plan.dims["hidden"]}, FFN {plan.dims["ffn"]}, {plan.dims["heads"]} heads / {plan.dims["kv_heads"]} KV heads
- Strategies: depth `{plan.depth}`, width `{plan.width}`, scaling `{plan.scaling}`
- Neuron importance measured on: {profile}
- Parameters: {params / 1e6:.2f}M
- `subclone.json` records the exact indices kept.

Load it with `{load}`.
"""


SUBCLONE_RECORD_READER = register_reader(
    "subclone-record",
    read_subclone_record,
    "a saved destination's subclone.json: the parent, the plan and the scales it was made with (save_destination)",
)
