"""DeepSeek-V3: multi-head latent attention, dense first blocks, shared experts and grouped sigmoid routing.

**Attention (MLA).** Queries go through a low-rank bottleneck, ``q_a_proj`` (q_lora_rank, d), an RMSNorm, then
``q_b_proj`` (heads x (qk_nope + qk_rope), q_lora_rank); keys and values share one latent,
``kv_a_proj_with_mqa`` (kv_lora_rank + qk_rope, d), normalized and expanded per head by ``kv_b_proj``
(heads x (qk_nope + v), kv_lora_rank); ``o_proj`` reads heads x v. What can be cut exactly: whole heads (the
rows of ``q_b_proj`` and ``kv_b_proj`` per head: the ``"mla_q"`` / ``"mla_kv"`` axes, and ``o_proj``'s columns)
and the residual width (the columns of ``q_a_proj`` and ``kv_a_proj_with_mqa``). The LoRA ranks are kept whole:
each latent is RMS-normalized as one vector and read by every head, and the rope part of ``kv_a_proj_with_mqa``
is shared by all heads, so no per-head or per-channel ranking applies to them; a spec that sets another rank is
refused.

**Experts.** Blocks from ``first_k_dense_replace`` on are MoE: ``mlp.gate`` (E, d) scores experts with a sigmoid
plus ``e_score_correction_bias`` (a buffer, sliced with the router rows), picks the best ``topk_group`` of
``n_group`` groups (each group scored by its two best experts), then the top ``num_experts_per_tok`` experts in
them; weights are renormalized (``norm_topk_prob``) and scaled by ``routed_scaling_factor``. Expert j belongs to
group j // (E / n_group), so experts are kept in equal numbers per group and stay in their group (a destination
keeps ``n_group``: its expert count must be a multiple of it, with at least two experts per group).
``mlp.shared_experts`` is a dense SwiGLU of width ``moe_intermediate_size * n_shared_experts``, so its width
follows the experts'. The dense blocks must stay a prefix of the destination's blocks.

Example::

    >>> from subclone_viz.families import FAMILIES, family_of
    >>> model = FAMILIES["deepseek_v3"].tiny_models()["deepseek_v3"]()
    >>> family_of(model).dims(model)
    Dims(layers=4, hidden=32, ffn=40, heads=4, kv_heads=4, head_dim=8, experts=8, experts_per_tok=2, expert_ffn=8, shared_ffn=8, mla_q_dim=10, mla_kv_dim=14)
    >>> family_of(model).rule_for("model.layers.0.self_attn.kv_b_proj.weight").axes
    ('mla_kv', 'keep')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .base import HF_CONFIG_FIELDS, TINY_VOCAB, Dims, ParamRule
from .mixtral import expert_rules
from .moe import MoEFamily, dense_layers_for, moe_block_indices
from .qwen_moe import SHARED_EXPERT_RULES
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."
_ATTN = _BLOCK + r"self_attn\."


@register_family
class DeepseekV3Family(MoEFamily):
    name = "deepseek_v3"
    description = "DeepSeek-V3 (MLA, mixture of experts)"
    model_types = ("deepseek_v3",)
    block_list = "model.layers"
    ffn_activation = "mlp.down_proj"  # the dense first blocks'
    attention_output = "self_attn.o_proj"
    shared_expert = "mlp.shared_experts"
    routing = "sigmoid"
    config_fields = dict(
        HF_CONFIG_FIELDS,
        experts="n_routed_experts",
        experts_per_tok="num_experts_per_tok",
        expert_ffn="moe_intermediate_size",
    )
    rules = (
        expert_rules()
        + SHARED_EXPERT_RULES
        + (
            ParamRule(r"model\.embed_tokens\.weight", ("keep", "residual")),
            ParamRule(_ATTN + r"(q_a_proj|kv_a_proj_with_mqa)\.weight", ("keep", "residual"), fan_in_axis=1),
            ParamRule(_ATTN + r"(q_a_proj|kv_a_proj_with_mqa)\.bias", ("keep",)),
            ParamRule(_ATTN + r"(q_a|kv_a)_layernorm\.weight", ("keep",)),
            ParamRule(_ATTN + r"q_b_proj\.weight", ("mla_q", "keep")),
            ParamRule(_ATTN + r"q_proj\.weight", ("mla_q", "residual"), fan_in_axis=1),  # q_lora_rank=None
            ParamRule(_ATTN + r"kv_b_proj\.weight", ("mla_kv", "keep")),
            ParamRule(_ATTN + r"o_proj\.weight", ("residual", "q_heads"), fan_in_axis=1),
            ParamRule(_ATTN + r"o_proj\.bias", ("residual",)),
            ParamRule(_BLOCK + r"mlp\.(gate|up)_proj\.weight", ("ffn", "residual"), fan_in_axis=1),
            ParamRule(_BLOCK + r"mlp\.down_proj\.weight", ("residual", "ffn"), fan_in_axis=1),
            ParamRule(_BLOCK + r"(input|post_attention)_layernorm\.weight", ("residual",)),
            ParamRule(r"model\.norm\.weight", ("residual",)),
            ParamRule(r"lm_head\.weight", ("keep", "residual"), fan_in_axis=1),
        )
    )
    buffer_rules = (ParamRule(_BLOCK + r"mlp\.gate\.e_score_correction_bias", ("experts",)),)

    def shared_width(self, model: nn.Module) -> int:
        return _config(model).moe_intermediate_size * _config(model).n_shared_experts

    def tied_shared_width(self, model: nn.Module, dims: Dims) -> int | None:
        return dims.expert_ffn * _config(model).n_shared_experts

    def extra_dims(self, model: nn.Module) -> dict[str, int]:
        c = _config(model)
        # The per-head attention output (o_proj's input) is v_head_dim wide; config.head_dim is the rope width.
        return dict(
            head_dim=c.v_head_dim,
            mla_q_dim=c.qk_nope_head_dim + c.qk_rope_head_dim,
            mla_kv_dim=c.qk_nope_head_dim + c.v_head_dim,
        )

    def expert_groups(self, model: nn.Module) -> int:
        return _config(model).n_group or 1

    def check_experts(self, parent: Dims, dims: Dims, model: nn.Module) -> str | None:
        groups, topk_group = self.expert_groups(model), _config(model).topk_group or 1
        if dims.experts % groups or dims.experts // groups < 2:
            valid = list(range(2 * groups, parent.experts + 1, groups))
            return (
                f"experts={dims.experts} cannot be routed by DeepSeek-V3's {groups} expert groups: keep a multiple "
                f"of n_group={groups} with at least two experts per group, one of {valid}"
            )
        reachable = topk_group * dims.experts // groups
        if dims.experts_per_tok > reachable:
            return (
                f"experts_per_tok={dims.experts_per_tok} is more than the {reachable} experts a token can reach "
                f"(topk_group={topk_group} groups of {dims.experts // groups}): choose at most {reachable}"
            )
        return None

    def check_layer_sources(self, model: nn.Module, layer_sources: list[int]) -> str | None:
        dense = set(range(_config(model).num_hidden_layers)) - set(moe_block_indices(self, model))
        positions = dense_layers_for(layer_sources, dense)
        if positions != list(range(len(positions))):
            return (
                f"blocks {layer_sources} put DeepSeek-V3's dense blocks {sorted(dense)} at positions {positions}: "
                f"its config (first_k_dense_replace) only allows them first; keep them in front"
            )
        return None

    def layer_changes(self, model: nn.Module, dims: Dims, layer_sources: list[int]) -> dict:
        dense = set(range(_config(model).num_hidden_layers)) - set(moe_block_indices(self, model))
        return {
            "head_dim": _config(model).head_dim,
            "first_k_dense_replace": len(dense_layers_for(layer_sources, dense)),
            "n_shared_experts": _config(model).n_shared_experts,
        }

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

        # One dense block, two groups of four experts (each token reaches one group), MLA with both ranks.
        return {
            "deepseek_v3": lambda: DeepseekV3ForCausalLM(
                DeepseekV3Config(
                    hidden_size=32,
                    num_hidden_layers=4,
                    num_attention_heads=4,
                    num_key_value_heads=4,
                    vocab_size=TINY_VOCAB,
                    max_position_embeddings=64,
                    intermediate_size=40,
                    moe_intermediate_size=8,
                    n_routed_experts=8,
                    n_group=2,
                    topk_group=1,
                    num_experts_per_tok=2,
                    first_k_dense_replace=1,
                    n_shared_experts=1,
                    q_lora_rank=16,
                    kv_lora_rank=12,
                    qk_rope_head_dim=4,
                    qk_nope_head_dim=6,
                    v_head_dim=8,
                    pad_token_id=0,
                )
            )
        }


def _config(model: nn.Module) -> Any:
    """The model's config (typed loosely: transformers configs are dynamic)."""
    return model.config
