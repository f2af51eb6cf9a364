"""Qwen2-MoE and Qwen3-MoE: Qwen attention with fused experts, Qwen2-MoE adding a gated shared expert.

Attention is Qwen2's (q/k/v biases) or Qwen3's (per-head q/k norms, kept whole), with Llama's rules. The router
``mlp.gate`` (E, d) takes the top ``num_experts_per_tok`` experts by softmax probability; with
``norm_topk_prob=False`` (Qwen2-MoE's default) their weights are the raw probabilities, not renormalized, so a
destination with fewer experts gives the kept ones larger weights (the softmax loses the dropped experts'
share). Qwen2-MoE adds ``mlp.shared_expert``, a dense SwiGLU MLP of width ``shared_expert_intermediate_size`` run
on every token and scaled by ``sigmoid(mlp.shared_expert_gate(x))``. Blocks listed in ``mlp_only_layers`` (or
off the ``decoder_sparse_step``) are dense MLPs of width ``intermediate_size``; the destination lists the
positions of its dense blocks, with ``decoder_sparse_step=1``.

Example::

    >>> from subclone_viz.families import FAMILIES, family_of
    >>> model = FAMILIES["qwen_moe"].tiny_models()["qwen2_moe"]()
    >>> family_of(model).dims(model)    # block 1 is dense (mlp_only_layers=[1])
    Dims(layers=4, hidden=32, ffn=40, heads=4, kv_heads=2, head_dim=8, experts=6, experts_per_tok=2, expert_ffn=16, shared_ffn=24)
    >>> family_of(model).rule_for("model.layers.0.mlp.shared_expert.down_proj.weight").axes
    ('residual', 'shared_ffn')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .base import HF_CONFIG_FIELDS, TINY_DECODER, Dims, ParamRule
from .mixtral import MOE_LLAMA_RULES
from .moe import MoEFamily, dense_layers_for, moe_block_indices
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."

SHARED_EXPERT_RULES = (
    ParamRule(_BLOCK + r"mlp\.shared_experts?\.(gate|up)_proj\.weight", ("shared_ffn", "residual"), fan_in_axis=1),
    ParamRule(_BLOCK + r"mlp\.shared_experts?\.down_proj\.weight", ("residual", "shared_ffn"), fan_in_axis=1),
)


@register_family
class QwenMoEFamily(MoEFamily):
    name = "qwen_moe"
    description = "Qwen2-MoE / Qwen3-MoE (mixture of experts)"
    model_types = ("qwen2_moe", "qwen3_moe")
    block_list = "model.layers"
    ffn_activation = "mlp.down_proj"  # the dense blocks'
    attention_output = "self_attn.o_proj"
    shared_expert = "mlp.shared_expert"
    config_fields = dict(
        HF_CONFIG_FIELDS,
        experts="num_experts",
        experts_per_tok="num_experts_per_tok",
        expert_ffn="moe_intermediate_size",
        shared_ffn="shared_expert_intermediate_size",
    )
    rules = (
        MOE_LLAMA_RULES
        + SHARED_EXPERT_RULES
        + (
            ParamRule(_BLOCK + r"mlp\.shared_expert_gate\.weight", ("keep", "residual"), fan_in_axis=1),
            ParamRule(_BLOCK + r"self_attn\.[qk]_norm\.weight", ("keep",)),
        )
    )

    def layer_changes(self, model: nn.Module, dims: Dims, layer_sources: list[int]) -> dict:
        dense = set(range(dims_layers(model))) - set(moe_block_indices(self, model))
        return {"decoder_sparse_step": 1, "mlp_only_layers": dense_layers_for(layer_sources, dense)}

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        import transformers as tf

        # Qwen2-MoE: a shared expert, q/k/v biases, a dense block, norm_topk_prob=False (its default);
        # Qwen3-MoE: per-head q/k norms, norm_topk_prob=True.
        return {
            "qwen2_moe": lambda: tf.Qwen2MoeForCausalLM(
                tf.Qwen2MoeConfig(
                    **TINY_DECODER,
                    intermediate_size=40,
                    moe_intermediate_size=16,
                    shared_expert_intermediate_size=24,
                    num_experts=6,
                    num_experts_per_tok=2,
                    mlp_only_layers=[1],
                )
            ),
            "qwen3_moe": lambda: tf.Qwen3MoeForCausalLM(
                tf.Qwen3MoeConfig(
                    **{**TINY_DECODER, "head_dim": 8},
                    intermediate_size=40,
                    moe_intermediate_size=16,
                    num_experts=6,
                    num_experts_per_tok=2,
                    norm_topk_prob=True,
                )
            ),
        }


def dims_layers(model: nn.Module) -> int:
    config: Any = model.config
    return int(config.num_hidden_layers)
