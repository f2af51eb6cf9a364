"""BERT-style encoders: post-norm blocks, learned positions and token types, GELU MLP.

A post-norm block normalizes *after* the residual sum: ``h = LN1(x + attn(x))``, ``y = LN2(h + mlp(h))``.
The residual metrics are measured on the pre-norm sum inside the block (method.md, section 3): with x the
block input and s the input of the block's last LayerNorm, ``f(x) := s - x``. ``head_dim = hidden /
heads``. Works for a bare ``BertModel`` (sentence encoders such as all-MiniLM-L6-v2, with a pooler) and
``BertForMaskedLM`` (whose MLM head gives a loss).

Example::

    >>> from transformers import BertConfig, BertModel
    >>> from subclone_viz.families import family_of
    >>> model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    ...                              intermediate_size=128, vocab_size=100))
    >>> family_of(model).dims(model)
    Dims(layers=2, hidden=64, ffn=128, heads=4, kv_heads=4, head_dim=16)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import TINY_VOCAB, Family, ParamRule
from .registry import register_family

_P = r"(?:bert\.)?"
_BLOCK = _P + r"encoder\.layer\.(?P<block>\d+)\."
MLM_MASK_FRACTION = 0.15
BERT_WORDPIECE_MASK_ID = 103


@register_family
class BertFamily(Family):
    name = "bert"
    description = "BERT encoder"
    model_types = ("bert",)
    ffn_activation = "output.dense"
    attention_output = "attention.output.dense"
    residual_sum = "output.LayerNorm"
    config_fields = dict(
        layers="num_hidden_layers", hidden="hidden_size", ffn="intermediate_size", heads="num_attention_heads"
    )
    rules = (
        ParamRule(_P + r"embeddings\.(word|position|token_type)_embeddings\.weight", ("keep", "residual")),
        ParamRule(_P + r"embeddings\.LayerNorm\.(weight|bias)", ("residual",)),
        ParamRule(_BLOCK + r"attention\.self\.(query|key|value)\.weight", ("q_heads", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"attention\.self\.(query|key|value)\.bias", ("q_heads",)),
        ParamRule(_BLOCK + r"attention\.output\.dense\.weight", ("residual", "q_heads"), fan_in_axis=1),
        ParamRule(_BLOCK + r"(attention\.output|output)\.(dense\.bias|LayerNorm\.(weight|bias))", ("residual",)),
        ParamRule(_BLOCK + r"intermediate\.dense\.weight", ("ffn", "residual"), fan_in_axis=1),
        ParamRule(_BLOCK + r"intermediate\.dense\.bias", ("ffn",)),
        ParamRule(_BLOCK + r"output\.dense\.weight", ("residual", "ffn"), fan_in_axis=1),
        ParamRule(_P + r"pooler\.dense\.weight", ("residual", "residual"), fan_in_axis=1),
        ParamRule(_P + r"pooler\.dense\.bias", ("residual",)),
        ParamRule(r"cls\.predictions\.transform\.dense\.weight", ("residual", "residual"), fan_in_axis=1),
        ParamRule(r"cls\.predictions\.transform\.(dense\.bias|LayerNorm\.(weight|bias))", ("residual",)),
        ParamRule(r"cls\.predictions\.(bias|decoder\.bias)", ("keep",)),
        ParamRule(r"cls\.predictions\.decoder\.weight", ("keep", "residual"), fan_in_axis=1),
    )

    def __init__(self, model: nn.Module):
        self.prefix = "bert." if hasattr(model, "bert") else ""
        self.block_list = f"{self.prefix}encoder.layer"
        self.task = "masked-lm" if hasattr(model, "cls") else "encoder"
        self.auto_class = "AutoModelForMaskedLM" if self.task == "masked-lm" else "AutoModel"
        pooler = getattr(model, "pooler", None)
        self.output_layer = (
            "cls.predictions.decoder" if self.task == "masked-lm" else ("pooler.dense" if pooler is not None else None)
        )

    def readout(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Post-norm blocks end normalized, so the masked-LM head reads a hidden state as it is."""
        if self.task != "masked-lm":
            return super().readout(model, hidden)
        result: torch.Tensor = model.get_submodule("cls")(hidden)
        return result

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
        return out.logits if self.task == "masked-lm" else out.last_hidden_state

    @staticmethod
    def mask_token_id(model: nn.Module) -> int:
        """The [MASK] id: the config's when it records one, else 103, its id in BERT's WordPiece vocabularies
        (transformers 5 configs no longer carry it); a vocabulary too small for that uses its last id."""
        configured = getattr(model.config, "mask_token_id", None)
        if configured is not None:
            return configured
        return (
            BERT_WORDPIECE_MASK_ID if model.config.vocab_size > BERT_WORDPIECE_MASK_ID else model.config.vocab_size - 1
        )

    def masked_inputs(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked input_ids, attention_mask, labels): a fixed, seeded 15% of the counted tokens replaced by
        [MASK], labels -100 except there. The same masks for every model and every call."""
        input_ids = batch["input_ids"]  # (B, T)
        attention_mask = batch.get("attention_mask", torch.ones_like(input_ids))
        generator = torch.Generator().manual_seed(0)
        chosen = (torch.rand(input_ids.shape, generator=generator) < MLM_MASK_FRACTION).to(input_ids.device)
        chosen &= attention_mask.bool()
        masked_ids = input_ids.masked_fill(chosen, self.mask_token_id(model))
        return masked_ids, attention_mask, input_ids.masked_fill(~chosen, -100)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked-LM loss on a fixed, seeded 15% of the tokens, so that every model sees the same masks."""
        if self.task != "masked-lm":
            raise ValueError(
                f"{type(model).__name__} has no language-model head, so it has no loss; load the parent as a "
                f"BertForMaskedLM (AutoModelForMaskedLM) to train or score it"
            )
        masked_ids, attention_mask, labels = self.masked_inputs(model, batch)
        logits = model(input_ids=masked_ids, attention_mask=attention_mask).logits  # (B, T, V)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
        )

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        from transformers import BertConfig, BertForMaskedLM, BertModel

        config: dict[str, Any] = dict(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=TINY_VOCAB,
            max_position_embeddings=64,
        )
        return {
            "bert": lambda: BertModel(BertConfig(**config)),
            "bert-mlm": lambda: BertForMaskedLM(BertConfig(**config)),
        }
