"""OLMo-2: a Llama-like decoder that normalizes after attention and the MLP, with q/k norms over the width.

A block is ``h = x + norm_a(attn(x))``, ``y = h + norm_f(mlp(h))``: attention and the MLP read the residual
stream unnormalized, and ``post_attention_layernorm`` / ``post_feedforward_layernorm`` normalize their
outputs (the block is still x + f(x), so the metrics need no pre-norm sum). ``q_norm`` and ``k_norm`` are
RMSNorms over all heads at once (width heads * head_dim and kv_heads * head_dim, not head_dim): their
weights lie on the ``"q_heads"`` / ``"kv_heads"`` axes, and a destination with fewer heads normalizes over
its kept heads only, as a narrower residual stream does in any RMSNorm (a reorder-only plan stays exact).

Example::

    >>> from transformers import Olmo2Config, Olmo2ForCausalLM
    >>> from subclone_viz.families import family_of
    >>> model = Olmo2ForCausalLM(Olmo2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    >>> family_of(model).rule_for("model.layers.0.self_attn.q_norm.weight").axes
    ('q_heads',)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .base import TINY_DECODER, TINY_SPECIAL_TOKENS, CausalLMFamily, ParamRule
from .llama import LLAMA_RULES
from .registry import register_family

_BLOCK = r"model\.layers\.(?P<block>\d+)\."
# OLMo's q/k RMSNorms span all heads (not one head_dim), so they follow the head axes; OLMoE shares them.
OLMO_QK_NORM_RULES = (
    ParamRule(_BLOCK + r"self_attn\.q_norm\.weight", ("q_heads",)),
    ParamRule(_BLOCK + r"self_attn\.k_norm\.weight", ("kv_heads",)),
)


@register_family
class Olmo2Family(CausalLMFamily):
    name = "olmo2"
    description = "OLMo-2"
    model_types = ("olmo2",)
    block_list = "model.layers"
    final_norm = "model.norm"
    ffn_activation = "mlp.down_proj"
    attention_output = "self_attn.o_proj"
    heads_follow_hidden = False
    rules = LLAMA_RULES + (
        ParamRule(_BLOCK + r"(post_attention|post_feedforward)_layernorm\.weight", ("residual",)),
        *OLMO_QK_NORM_RULES,
    )

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import Olmo2Config, Olmo2ForCausalLM

        return {
            "olmo2": lambda: Olmo2ForCausalLM(
                Olmo2Config(
                    **TINY_DECODER,
                    **TINY_SPECIAL_TOKENS,
                    intermediate_size=64,
                )
            )
        }
