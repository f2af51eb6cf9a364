"""Shared helpers for Hugging Face families: copying a config with new widths, building on meta."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def resized_config(model: nn.Module, changes: dict[str, Any], layer_sources: list[int]) -> Any:
    """A copy of ``model.config`` with ``changes`` applied and per-layer lists re-indexed by source block."""
    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)):
        config.layer_types = [layer_types[i] for i in layer_sources]
    # A destination is a plain dense checkpoint even when the parent came from a quantized GGUF file.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    return config


def build_model(model: nn.Module, config: Any, device: str | torch.device) -> nn.Module:
    """A model of ``model``'s class: uninitialized on "meta" (the subcloner fills it), else randomly initialized."""
    with torch.device(device):
        return type(model)(config)
