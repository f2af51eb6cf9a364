"""GPT-2: pre-norm blocks with LayerNorm, a GELU MLP, learned positions and a tied LM head.

Its projections are ``Conv1D`` modules whose weights are stored (in_features, out_features), the
transpose of ``nn.Linear``, so every fan-in axis here is axis 0. q, k and v live in one fused ``c_attn``
of width 3 * hidden, and ``head_dim = hidden / heads``: a narrower destination has fewer heads.

Example::

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from subclone_viz.families import family_of
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100))
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=64, ffn=256, heads=4, kv_heads=4, head_dim=16)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from .base import TINY_VOCAB, CausalLMFamily, Dims, ParamRule
from .registry import register_family

_BLOCK = r"transformer\.h\.(?P<block>\d+)\."


@register_family
class GPT2Family(CausalLMFamily):
    name = "gpt2"
    description = "GPT-2"
    model_types = ("gpt2",)
    block_list = "transformer.h"
    final_norm = "transformer.ln_f"
    ffn_activation = "mlp.c_proj"
    attention_output = "attn.c_proj"
    config_fields = dict(layers="n_layer", hidden="n_embd", ffn="n_inner", heads="n_head")
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

    def dims(self, model: nn.Module) -> Dims:
        dims = super().dims(model)
        # n_inner=None means GPT-2's default MLP of four times the width.
        return dataclasses.replace(dims, ffn=model.config.n_inner or 4 * dims.hidden)

    def build(
        self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"
    ) -> nn.Module:
        if model.config.scale_attn_by_inverse_layer_idx and layer_sources != list(range(len(layer_sources))):
            raise ValueError(
                f"this GPT-2 scales attention by 1 / (block index + 1) (scale_attn_by_inverse_layer_idx), so "
                f"parent blocks {layer_sources} cannot keep their attention at new positions; keep blocks "
                f"0 to N-1 (depth='first')"
            )
        return super().build(model, dims, layer_sources, device)

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import GPT2Config, GPT2LMHeadModel

        return {
            "gpt2": lambda: GPT2LMHeadModel(
                GPT2Config(
                    n_layer=4,
                    n_embd=32,
                    n_head=4,
                    n_positions=64,
                    vocab_size=TINY_VOCAB,
                    bos_token_id=1,
                    eos_token_id=1,
                )
            )
        }
