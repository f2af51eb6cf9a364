"""OLMoE: a Llama-like mixture of experts whose q/k norms span all heads, with unrenormalized top-k weights.

Attention is Llama's plus OLMo's RMSNorms over the whole query width (``q_norm``, hidden wide) and key width
(``k_norm``), so their weights lie on the ``"q_heads"`` / ``"kv_heads"`` axes and the query width must equal the
hidden width (head_dim is hidden / heads: the head count follows the hidden width). The router ``mlp.gate``
keeps the top ``num_experts_per_tok`` of ``num_experts`` by softmax probability, not renormalized by default
(``norm_topk_prob=False``). Experts are fused [gate | up] of width ``intermediate_size`` (also ``ffn``).

Example::

    >>> from subclone_viz.families import FAMILIES, family_of
    >>> model = FAMILIES["olmoe"].tiny_models()["olmoe"]()
    >>> family_of(model).rule_for("model.layers.0.self_attn.q_norm.weight").axes
    ('q_heads',)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import HF_CONFIG_FIELDS, TINY_DECODER
from .mixtral import MOE_LLAMA_RULES
from .moe import MoEFamily
from .olmo2 import OLMO_QK_NORM_RULES
from .registry import register_family


@register_family
class OlmoeFamily(MoEFamily):
    name = "olmoe"
    description = "OLMoE (mixture of experts)"
    model_types = ("olmoe",)
    block_list = "model.layers"
    ffn_activation = "mlp.down_proj"  # no dense FFN: every block is a mixture of experts
    attention_output = "self_attn.o_proj"
    heads_follow_hidden = True  # q_norm is hidden_size wide: the query width must be the hidden width
    config_fields = dict(
        HF_CONFIG_FIELDS, experts="num_experts", experts_per_tok="num_experts_per_tok", expert_ffn="intermediate_size"
    )
    rules = MOE_LLAMA_RULES + OLMO_QK_NORM_RULES

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import OlmoeConfig, OlmoeForCausalLM

        return {
            "olmoe": lambda: OlmoeForCausalLM(
                OlmoeConfig(
                    **TINY_DECODER,
                    intermediate_size=16,
                    num_experts=6,
                    num_experts_per_tok=2,
                    pad_token_id=0,
                    bos_token_id=1,
                    eos_token_id=1,
                )
            )
        }
