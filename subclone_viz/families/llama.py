"""Llama family: Llama, SmolLM2, Mistral, Qwen2 (and Qwen3's per-head q/k norms).

Pre-norm blocks with RMSNorm, SwiGLU MLP (``down(act(gate(x)) * up(x))``), rotary positions and
grouped-query attention: ``num_key_value_heads`` KV heads, each shared by ``heads / kv_heads`` query heads.
``head_dim`` is its own config field, so the head count does not follow from the hidden width. q/k/v carry
biases in Qwen2. The LM head is tied to the token embedding or not (``tie_word_embeddings``).

Example::

    from transformers import LlamaConfig, LlamaForCausalLM
    from subclone_viz.families import family_of
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    family_of(model).dims(model)   # Dims(layers=2, hidden=64, ffn=128, heads=4, kv_heads=2, head_dim=16)
"""

from __future__ import annotations

import torch
from torch import nn

from ._hf import build_model, resized_config
from .base import Dims, Family, ParamRule, causal_lm_loss

_BLOCK = r"model\.layers\.(?P<block>\d+)\."


class LlamaFamily(Family):
    name = "llama"
    description = "Llama family"
    task = "causal-lm"
    block_list = "model.layers"
    heads_follow_hidden = False
    rules = (
        ParamRule(r"model\.embed_tokens\.weight", ("keep", "residual")),
        ParamRule(_BLOCK + r"input_layernorm\.weight", ("residual",)),
        ParamRule(_BLOCK + r"post_attention_layernorm\.weight", ("residual",)),
        ParamRule(_BLOCK + r"self_attn\.q_proj\.weight", ("q_heads", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"self_attn\.q_proj\.bias", ("q_heads",)),
        ParamRule(_BLOCK + r"self_attn\.[kv]_proj\.weight", ("kv_heads", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"self_attn\.[kv]_proj\.bias", ("kv_heads",)),
        ParamRule(_BLOCK + r"self_attn\.[qk]_norm\.weight", ("keep",)),
        ParamRule(_BLOCK + r"self_attn\.o_proj\.weight", ("residual", "q_heads"), fan_in_axis=1),
        ParamRule(_BLOCK + r"self_attn\.o_proj\.bias", ("residual",)),
        ParamRule(_BLOCK + r"mlp\.(gate|up)_proj\.weight", ("ffn", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.(gate|up)_proj\.bias", ("ffn",)),
        ParamRule(_BLOCK + r"mlp\.down_proj\.weight", ("residual", "ffn"), fan_in_axis=1),
        ParamRule(_BLOCK + r"mlp\.down_proj\.bias", ("residual",)),
        ParamRule(r"model\.norm\.weight", ("residual",)),
        ParamRule(r"lm_head\.weight", ("keep", "residual"), fan_in_axis=1),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return getattr(config, "model_type", None) in {"llama", "mistral", "qwen2", "qwen3"} and hasattr(
            model, "lm_head"
        )

    def dims(self, model: nn.Module) -> Dims:
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return Dims(
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            ffn=c.intermediate_size,
            heads=c.num_attention_heads,
            kv_heads=c.num_key_value_heads or c.num_attention_heads,
            head_dim=head_dim,
        )

    def build(
        self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"
    ) -> nn.Module:
        config = resized_config(
            model,
            dict(
                hidden_size=dims.hidden,
                intermediate_size=dims.ffn,
                num_hidden_layers=dims.layers,
                num_attention_heads=dims.heads,
                num_key_value_heads=dims.kv_heads,
                head_dim=dims.head_dim,
            ),
            layer_sources,
        )
        if hasattr(config, "max_window_layers"):
            config.max_window_layers = min(config.max_window_layers, dims.layers)
        return build_model(model, config, device)

    def ffn_activation_module(self, block: nn.Module) -> nn.Module:
        return block.mlp.down_proj

    def attention_output_module(self, block: nn.Module) -> nn.Module:
        return block.self_attn.o_proj

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
        ).logits

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(self.logits(model, batch), batch)
