"""GPT-2: pre-norm blocks with LayerNorm, a GELU MLP, learned positions and a tied LM head.

Its projections are ``Conv1D`` modules whose weights are stored (in_features, out_features), the
transpose of ``nn.Linear``, so every fan-in axis here is axis 0. q, k and v live in one fused ``c_attn``
of width 3 * hidden, and ``head_dim = hidden / heads``: a narrower destination has fewer heads.

Example::

    from transformers import GPT2Config, GPT2LMHeadModel
    from subclone_viz.families import family_of
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100))
    family_of(model).dims(model)   # Dims(layers=2, hidden=64, ffn=256, heads=4, kv_heads=4, head_dim=16)
"""

from __future__ import annotations

import torch
from torch import nn

from ._hf import build_model, resized_config
from .base import Dims, Family, ParamRule, causal_lm_loss

_BLOCK = r"transformer\.h\.(?P<block>\d+)\."


class GPT2Family(Family):
    name = "gpt2"
    description = "GPT-2"
    task = "causal-lm"
    block_list = "transformer.h"
    rules = (
        ParamRule(r"transformer\.wte\.weight", ("keep", "residual")),
        ParamRule(r"transformer\.wpe\.weight", ("keep", "residual")),
        ParamRule(_BLOCK + r"ln_[12]\.(weight|bias)", ("residual",)),
        ParamRule(_BLOCK + r"attn\.c_attn\.weight", ("residual", "qkv"), fan_in_axis=0),
        ParamRule(_BLOCK + r"attn\.c_attn\.bias", ("qkv",)),
        ParamRule(_BLOCK + r"attn\.c_proj\.weight", ("q_heads", "residual"), fan_in_axis=0),
        ParamRule(_BLOCK + r"attn\.c_proj\.bias", ("residual",)),
        ParamRule(_BLOCK + r"mlp\.c_fc\.weight", ("residual", "ffn"), fan_in_axis=0),
        ParamRule(_BLOCK + r"mlp\.c_fc\.bias", ("ffn",)),
        ParamRule(_BLOCK + r"mlp\.c_proj\.weight", ("ffn", "residual"), fan_in_axis=0),
        ParamRule(_BLOCK + r"mlp\.c_proj\.bias", ("residual",)),
        ParamRule(r"transformer\.ln_f\.(weight|bias)", ("residual",)),
        ParamRule(r"lm_head\.weight", ("keep", "residual"), fan_in_axis=1),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return getattr(getattr(model, "config", None), "model_type", None) == "gpt2" and hasattr(model, "lm_head")

    def dims(self, model: nn.Module) -> Dims:
        c = model.config
        return Dims(
            layers=c.n_layer,
            hidden=c.n_embd,
            ffn=c.n_inner or 4 * c.n_embd,
            heads=c.n_head,
            kv_heads=c.n_head,
            head_dim=c.n_embd // c.n_head,
        )

    def build(
        self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"
    ) -> nn.Module:
        config = resized_config(
            model,
            dict(n_embd=dims.hidden, n_head=dims.heads, n_layer=dims.layers, n_inner=dims.ffn),
            layer_sources,
        )
        return build_model(model, config, device)

    def ffn_activation_module(self, block: nn.Module) -> nn.Module:
        return block.mlp.c_proj

    def attention_output_module(self, block: nn.Module) -> nn.Module:
        return block.attn.c_proj

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(self.logits(model, batch), batch)
