"""Gemma 1, 2 and 3 (text): Llama-like decoders with Gemma's own norms, embedding scale and attention.

What differs from Llama, and what it means for subcloning:

* RMSNorm multiplies by ``1 + w``: the weights still lie on the residual axis, sliced like any norm;
* Gemma 2 and 3 put sandwich norms around attention and the MLP (``post_attention_layernorm``,
  ``pre_feedforward_layernorm``, ``post_feedforward_layernorm``); the block is still x + f(x);
* Gemma 3 normalizes q and k per head (``q_norm``/``k_norm`` of width head_dim, kept whole);
* token embeddings are multiplied by ``embed_scale`` = sqrt(hidden), a buffer computed from the width: a
  destination recomputes it for its own width (as its class does when it is reloaded);
* Gemma 2 and 3 alternate sliding-window and full attention by ``config.layer_types``, which follows the
  kept blocks; Gemma 3 keeps one rotary table per layer type;
* multi-query attention (Gemma 3 270M: 4 query heads share 1 KV head) is grouped-query attention with one
  group; ``head_dim`` is a config field (256 in Gemma 3 270M, wider than hidden / heads).

Example::

    >>> from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    >>> from subclone_viz.families import family_of
    >>> model = Gemma3ForCausalLM(Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=100))
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=64, ffn=128, heads=4, kv_heads=1, head_dim=32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import TINY_DECODER, CausalLMFamily, ParamRule
from .llama import LLAMA_RULES
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."


@register_family
class GemmaFamily(CausalLMFamily):
    name = "gemma"
    description = "Gemma"
    model_types = ("gemma", "gemma2", "gemma3_text")
    block_list = "model.layers"
    final_norm = "model.norm"
    ffn_activation = "mlp.down_proj"
    attention_output = "self_attn.o_proj"
    heads_follow_hidden = False
    rules = LLAMA_RULES + (
        ParamRule(_BLOCK + r"(input|post_attention|pre_feedforward|post_feedforward)_layernorm\.weight", ("residual",)),
        ParamRule(_BLOCK + r"self_attn\.[qk]_norm\.weight", ("keep",)),
    )

    def derived_buffers(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"model.embed_tokens.embed_scale": torch.tensor(model.config.hidden_size**0.5)}

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        import transformers as tf

        # Gemma 3 270M's proportions, shrunk: 4 query heads on 1 KV head, head_dim wider than hidden / heads,
        # sliding-window layer types narrower than the test batches.
        small: dict[str, Any] = dict(
            TINY_DECODER, intermediate_size=64, num_key_value_heads=1, head_dim=16, pad_token_id=0
        )
        sliding: dict[str, Any] = dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"] * 2)
        return {
            "gemma": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**small)),
            "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**small, **sliding)),
            "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**small, **sliding)),
        }
