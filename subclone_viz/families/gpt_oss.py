"""gpt-oss: Llama-like attention with biases and per-head sinks, and transposed, interleaved, biased experts.

Attention has q/k/v/o biases and ``sinks``, one learned logit per query head (the ``"head_index"`` axis), on
alternating sliding-window and full layers (``layer_types`` follows the kept blocks). The router
``mlp.router`` has a bias; it takes the top ``num_experts_per_tok`` logits and softmaxes over those only, so the
kept weights are always renormalized. The experts are stored transposed, ``gate_up_proj`` (E, d, 2F) with gate
and up **interleaved** per neuron (columns 2n and 2n+1: the ``"expert_gate_up_il"`` axis) and ``down_proj``
(E, F, d), each with a bias; the activation is gpt-oss's clamped ``(up + 1) * gate * sigmoid(alpha * gate)``.

Example::

    >>> from subclone_viz.families import FAMILIES, family_of
    >>> model = FAMILIES["gpt_oss"].tiny_models()["gpt_oss"]()
    >>> family_of(model).rule_for("model.layers.0.mlp.experts.gate_up_proj").axes
    ('experts', 'residual', 'expert_gate_up_il')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import HF_CONFIG_FIELDS, TINY_DECODER, ParamRule
from .llama import LLAMA_RULES
from .moe import MoEFamily
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."


@register_family
class GptOssFamily(MoEFamily):
    name = "gpt_oss"
    description = "gpt-oss (mixture of experts)"
    model_types = ("gpt_oss",)
    block_list = "model.layers"
    ffn_activation = "mlp.down_proj"  # no dense FFN: every block is a mixture of experts
    attention_output = "self_attn.o_proj"
    router = "mlp.router"
    routing = "topk_softmax"
    renormalize_field = None
    config_fields = dict(
        HF_CONFIG_FIELDS,
        experts="num_local_experts",
        experts_per_tok="num_experts_per_tok",
        expert_ffn="intermediate_size",
    )
    rules = LLAMA_RULES + (
        ParamRule(_BLOCK + r"(input|post_attention)_layernorm\.weight", ("residual",)),
        ParamRule(_BLOCK + r"self_attn\.sinks", ("head_index",)),
        ParamRule(_BLOCK + r"mlp\.router\.weight", ("experts", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.router\.bias", ("experts",)),
        ParamRule(_BLOCK + r"mlp\.experts\.gate_up_proj", ("experts", "residual", "expert_gate_up_il"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.experts\.gate_up_proj_bias", ("experts", "expert_gate_up_il")),
        ParamRule(_BLOCK + r"mlp\.experts\.down_proj", ("experts", "expert_ffn", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.experts\.down_proj_bias", ("experts", "residual")),
    )

    def expert_forward(self, experts: Any, expert: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate_up = x @ experts.gate_up_proj[expert] + experts.gate_up_proj_bias[expert]  # (n, 2F) interleaved
        activation = experts._apply_gate(gate_up)  # (n, F)
        return activation, activation @ experts.down_proj[expert] + experts.down_proj_bias[expert]

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import GptOssConfig, GptOssForCausalLM

        return {
            "gpt_oss": lambda: GptOssForCausalLM(
                GptOssConfig(
                    **TINY_DECODER,
                    head_dim=8,
                    intermediate_size=16,
                    num_local_experts=6,
                    num_experts_per_tok=2,
                    sliding_window=8,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                )
            )
        }
