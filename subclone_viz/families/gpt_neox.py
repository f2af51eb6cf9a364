"""GPT-NeoX (Pythia): parallel attention and MLP on one residual stream, per-head fused qkv, partial rotary.

With ``use_parallel_residual`` a block is ``y = x + attn(ln1(x)) + mlp(ln2(x))``: still x + f(x).
``query_key_value`` is fused per head, laid out [heads][3][head_dim] (the ``"qkv_per_head"`` axis), and
``head_dim = hidden / heads``, so a narrower destination has fewer heads. Rotary positions cover the first
``partial_rotary_factor * head_dim`` channels of every head; head_dim never changes, so neither do they.
LayerNorms and every projection carry biases.

Example::

    >>> from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    >>> from subclone_viz.families import family_of
    >>> model = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
    ...                                          num_attention_heads=4, vocab_size=100))
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=64, ffn=256, heads=4, kv_heads=4, head_dim=16)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import TINY_VOCAB, CausalLMFamily, ParamRule
from .registry import register_family

_BLOCK = r"gpt_neox\.layers\.(?P<block>\d+)\."


@register_family
class GPTNeoXFamily(CausalLMFamily):
    name = "gpt_neox"
    description = "GPT-NeoX / Pythia"
    model_types = ("gpt_neox",)
    block_list = "gpt_neox.layers"
    final_norm = "gpt_neox.final_layer_norm"
    ffn_activation = "mlp.dense_4h_to_h"
    attention_output = "attention.dense"
    config_fields = dict(
        layers="num_hidden_layers", hidden="hidden_size", ffn="intermediate_size", heads="num_attention_heads"
    )
    rules = (
        ParamRule(r"gpt_neox\.embed_in\.weight", ("keep", "residual")),
        ParamRule(_BLOCK + r"(input|post_attention)_layernorm\.(weight|bias)", ("residual",)),
        ParamRule(_BLOCK + r"attention\.query_key_value\.weight", ("qkv_per_head", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"attention\.query_key_value\.bias", ("qkv_per_head",)),
        ParamRule(_BLOCK + r"attention\.dense\.weight", ("residual", "q_heads"), fan_in_axis=1),
        ParamRule(_BLOCK + r"(attention\.dense|mlp\.dense_4h_to_h)\.bias", ("residual",)),
        ParamRule(_BLOCK + r"mlp\.dense_h_to_4h\.weight", ("ffn", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.dense_h_to_4h\.bias", ("ffn",)),
        ParamRule(_BLOCK + r"mlp\.dense_4h_to_h\.weight", ("residual", "ffn"), fan_in_axis=1),
        ParamRule(r"gpt_neox\.final_layer_norm\.(weight|bias)", ("residual",)),
        ParamRule(r"lm_head\.weight", ("keep", "residual"), fan_in_axis=1),
    )

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        # Pythia's partial rotary (a quarter of each head), parallel residual and untied head.
        return {
            "gpt_neox": lambda: GPTNeoXForCausalLM(
                GPTNeoXConfig(
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=4,
                    num_attention_heads=4,
                    vocab_size=TINY_VOCAB,
                    max_position_embeddings=64,
                    rotary_pct=0.25,
                    use_parallel_residual=True,
                    bos_token_id=1,
                    eos_token_id=1,
                )
            )
        }
