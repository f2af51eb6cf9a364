"""Hugging Face ``ViTForImageClassification``: the same pre-norm ViT as timm's, in transformers' layout.

Separate q, k, v projections (``head_dim = hidden / heads``), a cls token and position embeddings
on the residual axis, the patch-embedding convolution's output channels, and a linear classifier on the
final LayerNorm's cls token. A destination saves as an ordinary checkpoint that
``AutoModelForImageClassification`` loads.

Example::

    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from subclone_viz.families import family_of
    >>> model = ViTForImageClassification(ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                                             num_attention_heads=4, image_size=32, patch_size=8))
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=64, ffn=128, heads=4, kv_heads=4, head_dim=16)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .base import ImageClassifierFamily, ParamRule
from .registry import register_family

_BLOCK = r"vit\.layers\.(?P<block>\d+)\."


@register_family
class HFViTFamily(ImageClassifierFamily):
    name = "hf-vit"
    description = "Vision Transformer (Hugging Face)"
    model_types = ("vit",)
    auto_class = "AutoModelForImageClassification"
    head = "classifier"
    block_list = "vit.layers"
    final_norm = "vit.layernorm"
    output_layer = "classifier"
    ffn_activation = "mlp.fc2"
    attention_output = "attention.o_proj"
    config_fields = dict(
        layers="num_hidden_layers", hidden="hidden_size", ffn="intermediate_size", heads="num_attention_heads"
    )
    rules = (
        ParamRule(r"vit\.embeddings\.(cls_token|mask_token|position_embeddings)", ("keep", "keep", "residual")),
        ParamRule(r"vit\.embeddings\.patch_embeddings\.projection\.weight", ("residual", "keep", "keep", "keep")),
        ParamRule(r"vit\.embeddings\.patch_embeddings\.projection\.bias", ("residual",)),
        ParamRule(_BLOCK + r"layernorm_(before|after)\.(weight|bias)", ("residual",)),
        ParamRule(_BLOCK + r"attention\.[qkv]_proj\.weight", ("q_heads", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"attention\.[qkv]_proj\.bias", ("q_heads",)),
        ParamRule(_BLOCK + r"attention\.o_proj\.weight", ("residual", "q_heads"), fan_in_axis=1),
        ParamRule(_BLOCK + r"(attention\.o_proj|mlp\.fc2)\.bias", ("residual",)),
        ParamRule(_BLOCK + r"mlp\.fc1\.weight", ("ffn", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.fc1\.bias", ("ffn",)),
        ParamRule(_BLOCK + r"mlp\.fc2\.weight", ("residual", "ffn"), fan_in_axis=1),
        ParamRule(r"vit\.layernorm\.(weight|bias)", ("residual",)),
        ParamRule(r"classifier\.weight", ("keep", "residual"), fan_in_axis=1),
        ParamRule(r"classifier\.bias", ("keep",)),
    )

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(pixel_values=batch["pixel_values"]).logits

    def readout(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm, then the classifier on the class token."""
        norm, classifier = model.get_submodule("vit.layernorm"), model.get_submodule("classifier")
        result: torch.Tensor = classifier(norm(hidden)[:, 0, :])
        return result

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import ViTConfig, ViTForImageClassification

        return {
            "hf-vit": lambda: ViTForImageClassification(
                ViTConfig(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=4,
                    num_attention_heads=4,
                    image_size=16,
                    patch_size=4,
                    num_channels=1,
                    num_labels=10,
                )
            )
        }
