"""Phi-3: a Llama-like decoder whose q, k, v and whose gate, up projections are fused.

``qkv_proj`` stacks [q | k | v] with ``heads`` query heads and ``kv_heads`` key and value heads each (the
GQA-aware ``"qkv"`` axis); ``gate_up_proj`` stacks [gate | up] (the ``"gate_up"`` axis: the kept FFN neurons
in each half). ``head_dim`` is written into the destination's config, which Phi-3 reads when present, so
the head count does not follow from the hidden width.

Example::

    >>> from transformers import Phi3Config, Phi3ForCausalLM
    >>> from subclone_viz.families import family_of
    >>> model = Phi3ForCausalLM(Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
    ...                                    pad_token_id=0))
    >>> family_of(model).rule_for("model.layers.0.mlp.gate_up_proj.weight").axes
    ('gate_up', 'residual')
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import TINY_DECODER, TINY_SPECIAL_TOKENS, CausalLMFamily, ParamRule
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."


@register_family
class Phi3Family(CausalLMFamily):
    name = "phi3"
    description = "Phi-3"
    model_types = ("phi3",)
    block_list = "model.layers"
    final_norm = "model.norm"
    ffn_activation = "mlp.down_proj"
    attention_output = "self_attn.o_proj"
    heads_follow_hidden = False
    rules = (
        ParamRule(r"model\.embed_tokens\.weight", ("keep", "residual")),
        ParamRule(_BLOCK + r"(input|post_attention)_layernorm\.weight", ("residual",)),
        ParamRule(_BLOCK + r"self_attn\.qkv_proj\.weight", ("qkv", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"self_attn\.o_proj\.weight", ("residual", "q_heads"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.gate_up_proj\.weight", ("gate_up", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.down_proj\.weight", ("residual", "ffn"), fan_in_axis=1),
        ParamRule(r"model\.norm\.weight", ("residual",)),
        ParamRule(r"lm_head\.weight", ("keep", "residual"), fan_in_axis=1),
    )

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import Phi3Config, Phi3ForCausalLM

        return {
            "phi3": lambda: Phi3ForCausalLM(
                Phi3Config(
                    **TINY_DECODER,
                    **TINY_SPECIAL_TOKENS,
                    intermediate_size=64,
                )
            )
        }
