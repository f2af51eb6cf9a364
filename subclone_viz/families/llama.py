"""Llama family: Llama, SmolLM2, Mistral, Qwen2 and Qwen3.

Pre-norm blocks with RMSNorm, SwiGLU MLP (``down(act(gate(x)) * up(x))``), rotary positions and
grouped-query attention: ``num_key_value_heads`` KV heads, each shared by ``heads / kv_heads`` query heads.
``head_dim`` is its own config field, so the head count does not follow from the hidden width. q/k/v carry
biases in Qwen2; Qwen3 normalizes q and k per head (a norm of width head_dim, kept whole). The LM head is
tied to the token embedding or not (``tie_word_embeddings``).

Example::

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from subclone_viz.families import family_of
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=64, ffn=128, heads=4, kv_heads=2, head_dim=16)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .base import TINY_DECODER, CausalLMFamily, ParamRule
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."

# The rules every Llama-like decoder shares (Gemma and OLMo-2 add their norms to these).
LLAMA_RULES = (
    ParamRule(r"model\.embed_tokens\.weight", ("keep", "residual")),
    ParamRule(_BLOCK + r"self_attn\.q_proj\.weight", ("q_heads", "residual"), fan_in_axis=1),
    ParamRule(_BLOCK + r"self_attn\.q_proj\.bias", ("q_heads",)),
    ParamRule(_BLOCK + r"self_attn\.[kv]_proj\.weight", ("kv_heads", "residual"), fan_in_axis=1),
    ParamRule(_BLOCK + r"self_attn\.[kv]_proj\.bias", ("kv_heads",)),
    ParamRule(_BLOCK + r"self_attn\.o_proj\.weight", ("residual", "q_heads"), fan_in_axis=1),
    ParamRule(_BLOCK + r"self_attn\.o_proj\.bias", ("residual",)),
    ParamRule(_BLOCK + r"mlp\.(gate|up)_proj\.weight", ("ffn", "residual"), fan_in_axis=1),
    ParamRule(_BLOCK + r"mlp\.(gate|up)_proj\.bias", ("ffn",)),
    ParamRule(_BLOCK + r"mlp\.down_proj\.weight", ("residual", "ffn"), fan_in_axis=1),
    ParamRule(_BLOCK + r"mlp\.down_proj\.bias", ("residual",)),
    ParamRule(r"model\.norm\.weight", ("residual",)),
    ParamRule(r"lm_head\.weight", ("keep", "residual"), fan_in_axis=1),
)


@register_family
class LlamaFamily(CausalLMFamily):
    name = "llama"
    description = "Llama family"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    block_list = "model.layers"
    final_norm = "model.norm"
    ffn_activation = "mlp.down_proj"
    attention_output = "self_attn.o_proj"
    heads_follow_hidden = False
    rules = LLAMA_RULES + (
        ParamRule(_BLOCK + r"(input|post_attention)_layernorm\.weight", ("residual",)),
        ParamRule(_BLOCK + r"self_attn\.[qk]_norm\.weight", ("keep",)),
    )

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        import transformers as tf

        # Grouped-query attention with a head_dim of its own, tied and untied heads, q/k/v biases (Qwen2),
        # per-head q/k norms (Qwen3), a sliding window (Mistral).
        small: dict[str, Any] = dict(TINY_DECODER, intermediate_size=64)
        llama: dict[str, Any] = dict(small, hidden_size=48, intermediate_size=80, num_attention_heads=6, head_dim=8)
        return {
            "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**llama, tie_word_embeddings=True)),
            "llama-untied": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**llama, tie_word_embeddings=False)),
            "mistral": lambda: tf.MistralForCausalLM(tf.MistralConfig(**small, sliding_window=16)),
            "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**small, tie_word_embeddings=True)),
            "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**small, head_dim=8)),
        }
