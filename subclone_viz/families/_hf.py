"""Shared helpers for Hugging Face families: copying a config with new widths, building on meta."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

# Per-layer config lists that a destination re-indexes by the parent block each of its layers comes from.
PER_LAYER_FIELDS = ("layer_types",)


def resized_config(model: nn.Module, changes: dict[str, Any], layer_sources: list[int]) -> Any:
    """A copy of ``model.config`` with ``changes`` applied and per-layer lists re-indexed by source block.

    Raises ValueError for a per-layer list this does not know how to follow (the destination's layers
    would silently take the settings of other blocks).
    """
    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    parent_layers = getattr(model.config, "num_hidden_layers", None)
    for key, value in vars(model.config).items():
        per_layer = isinstance(value, (list, tuple)) and len(value) == parent_layers and parent_layers > 1
        if per_layer and key not in PER_LAYER_FIELDS and key != "architectures":
            raise ValueError(
                f"config.{key} holds one entry per block, and subclone_viz only knows how to make "
                f"{', '.join(PER_LAYER_FIELDS)} follow the kept blocks; this model cannot be subcloned exactly"
            )
    for key in PER_LAYER_FIELDS:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)):
            setattr(config, key, [values[i] for i in layer_sources])
    if hasattr(config, "max_window_layers"):
        config.max_window_layers = min(config.max_window_layers, len(layer_sources))
    # A destination is a plain dense checkpoint even when the parent came from a quantized GGUF file.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    return config


def build_model(model: nn.Module, config: Any, device: str | torch.device) -> nn.Module:
    """A model of ``model``'s class: uninitialized on "meta" (the subcloner fills it), else randomly initialized."""
    with torch.device(device):
        return type(model)(config)
