"""timm Vision Transformers: pre-norm blocks, a cls token, learned position embeddings, fused qkv.

The residual stream runs through the patch-embedding convolution's output channels, the cls (and
register) tokens, the position embeddings, every block and the final norm into the classifier's input.
``head_dim = embed_dim / num_heads``. A destination is built with ``timm.create_model`` from the parent's
architecture name and its recorded constructor arguments with new widths, and saves as an ordinary timm
checkpoint that ``timm.create_model("local-dir:DIR", pretrained=True)`` loads.

Example::

    >>> import timm
    >>> from subclone_viz.families import family_of
    >>> model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10)
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=192, ffn=768, heads=3, kv_heads=3, head_dim=64)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import Dims, ImageClassifierFamily, ParamRule
from .registry import register_family

_BLOCK = r"blocks\.(?P<block>\d+)\."


@register_family
class TimmViTFamily(ImageClassifierFamily):
    name = "vit"
    description = "Vision Transformer (timm)"
    library = "timm"
    block_list = "blocks"
    final_norm = "norm"
    output_layer = "head"
    ffn_activation = "mlp.fc2"
    attention_output = "attn.proj"
    rules = (
        ParamRule(r"(cls_token|reg_token|pos_embed)", ("keep", "keep", "residual")),
        ParamRule(r"patch_embed\.proj\.weight", ("residual", "keep", "keep", "keep")),
        ParamRule(r"patch_embed\.proj\.bias", ("residual",)),
        ParamRule(_BLOCK + r"norm[12]\.(weight|bias)", ("residual",)),
        ParamRule(_BLOCK + r"ls[12]\.gamma", ("residual",)),
        ParamRule(_BLOCK + r"attn\.qkv\.weight", ("qkv", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"attn\.qkv\.bias", ("qkv",)),
        ParamRule(_BLOCK + r"attn\.[qk]_norm\.(weight|bias)", ("keep",)),
        ParamRule(_BLOCK + r"attn\.proj\.weight", ("residual", "q_heads"), fan_in_axis=1),
        ParamRule(_BLOCK + r"attn\.proj\.bias", ("residual",)),
        ParamRule(_BLOCK + r"mlp\.fc1\.weight", ("ffn", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.fc1\.bias", ("ffn",)),
        ParamRule(_BLOCK + r"mlp\.fc2\.weight", ("residual", "ffn"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.fc2\.bias", ("residual",)),
        ParamRule(r"(norm_pre|norm|fc_norm)\.(weight|bias)", ("residual",)),
        ParamRule(r"head\.weight", ("keep", "residual"), fan_in_axis=1),
        ParamRule(r"head\.bias", ("keep",)),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """timm models have no model_type: this adapter matches the class."""
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def dims(self, model: nn.Module) -> Dims:
        block = model.blocks[0]
        heads = block.attn.num_heads
        return Dims(
            layers=len(model.blocks),
            hidden=model.embed_dim,
            ffn=block.mlp.fc1.out_features,
            heads=heads,
            kv_heads=heads,
            head_dim=block.attn.head_dim,
        )

    def model_args(self, model: nn.Module, dims: Dims | None = None) -> dict[str, Any]:
        """The ``timm.create_model`` arguments that rebuild ``model`` (with ``dims``'s widths, if given)."""
        if not hasattr(model, "_model_args"):
            raise ValueError(
                "this VisionTransformer was not built by timm.create_model, so its constructor arguments are "
                "unknown; create it with timm.create_model(name, **kwargs)"
            )
        args = dict(model._model_args)
        args.update(num_classes=model.num_classes, global_pool=model.global_pool)
        if dims is not None:
            # timm sizes the MLP as int(embed_dim * mlp_ratio); the half keeps that exact after rounding.
            args.update(
                embed_dim=dims.hidden, depth=dims.layers, num_heads=dims.heads, mlp_ratio=(dims.ffn + 0.5) / dims.hidden
            )
        return args

    def architecture(self, model: nn.Module) -> str:
        return model.pretrained_cfg["architecture"]

    def build(
        self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"
    ) -> nn.Module:
        import timm

        with torch.device(device):
            return timm.create_model(self.architecture(model), pretrained=False, **self.model_args(model, dims))

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["pixel_values"])

    def readout(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The final norm, then timm's own head: its pooling (the class token or the mean), fc_norm, classifier."""
        head: Any = model  # a timm VisionTransformer (its methods are not typed as modules)
        result: torch.Tensor = head.forward_head(head.norm(hidden))
        return result

    def save(self, model: nn.Module, directory: str, processor: Any = None) -> None:
        """model.safetensors and a config.json that ``timm.create_model("local-dir:DIR")`` reads."""
        from timm.models import save_for_hf

        save_for_hf(model, directory, safe_serialization=True)

    def extra_state(self, model: nn.Module) -> dict[str, Any]:
        return {"architecture": self.architecture(model), "model_args": self.model_args(model)}

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        import timm

        return {
            "vit": lambda: timm.create_model(
                "vit_tiny_patch16_224",
                pretrained=False,
                img_size=16,
                patch_size=4,
                in_chans=1,
                depth=4,
                embed_dim=32,
                num_heads=4,
                num_classes=10,
            )
        }
