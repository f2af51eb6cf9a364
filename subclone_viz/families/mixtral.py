"""Mixtral: a Llama-like decoder whose FFN is a mixture of experts, fused as 3-D parameters.

Attention is Llama's (grouped-query, rotary, RMSNorm pre-norm), so Llama's rules apply. Each block's
``mlp.gate`` router (E, d) scores the ``num_local_experts`` experts; a token goes to its top
``num_experts_per_tok`` by softmax probability, weighted by those probabilities renormalized over the top-k
(always: Mixtral has no ``norm_topk_prob``). The experts are ``mlp.experts.gate_up_proj`` (E, 2F, d), [gate | up]
per expert, and ``down_proj`` (E, d, F). One config value, ``intermediate_size``, is both the experts' width
and ``ffn``.

Example::

    >>> from subclone_viz.families import FAMILIES, family_of
    >>> family = family_of(FAMILIES["mixtral"].tiny_models()["mixtral"]())
    >>> family.rule_for("model.layers.0.mlp.experts.down_proj").axes
    ('experts', 'residual', 'expert_ffn')
    >>> family.rule_for("model.layers.0.mlp.gate.weight").axes    # the router's rows follow the kept experts
    ('experts', 'residual')
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import HF_CONFIG_FIELDS, TINY_DECODER, ParamRule
from .llama import LLAMA_RULES
from .moe import MoEFamily
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."


def expert_rules(router: str = r"mlp\.gate") -> tuple[ParamRule, ...]:
    """The router and the [gate | up] fused experts of Mixtral, Qwen-MoE, OLMoE and DeepSeek-V3."""
    return (
        ParamRule(_BLOCK + router + r"\.weight", ("experts", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.experts\.gate_up_proj", ("experts", "expert_gate_up", "residual"), fan_in_axis=2),
        ParamRule(_BLOCK + r"mlp\.experts\.down_proj", ("experts", "residual", "expert_ffn"), fan_in_axis=2),
    )


# Mixtral-like MoE decoders: Llama's attention and norms, then the experts.
MOE_LLAMA_RULES = (
    LLAMA_RULES + expert_rules() + (ParamRule(_BLOCK + r"(input|post_attention)_layernorm\.weight", ("residual",)),)
)


# The small attention of every MoE family's tiny models: grouped-query, 4 blocks, hidden 32.
@register_family
class MixtralFamily(MoEFamily):
    name = "mixtral"
    description = "Mixtral (mixture of experts)"
    model_types = ("mixtral",)
    block_list = "model.layers"
    ffn_activation = "mlp.down_proj"  # no dense FFN: every block is a mixture of experts
    attention_output = "self_attn.o_proj"
    renormalize_field = None
    config_fields = dict(
        HF_CONFIG_FIELDS,
        experts="num_local_experts",
        experts_per_tok="num_experts_per_tok",
        expert_ffn="intermediate_size",
    )
    rules = MOE_LLAMA_RULES

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import MixtralConfig, MixtralForCausalLM

        return {
            "mixtral": lambda: MixtralForCausalLM(
                MixtralConfig(
                    **TINY_DECODER, intermediate_size=24, num_local_experts=6, num_experts_per_tok=2, head_dim=8
                )
            )
        }
