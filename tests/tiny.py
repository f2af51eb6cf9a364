"""Tiny randomly initialized parents of every registered family, and random batches for them.

The models come from each registered family's ``tiny_models()`` (its file in subclone_viz/families/). Each
factory builds a model in well under a second; widths are chosen so that every slicing path is exercised: grouped-query attention (llama, mistral), q/k/v biases (qwen2), per-head q/k norms (qwen3,
gemma3), an untied LM head (llama-untied), post-norm (bert, bert-mlm), fused qkv (gpt2, vit), multi-query
attention, sandwich norms and sliding-window layer types narrower than the batches (gemma2, gemma3).
The family tests fail for a family or a claimed model_type that has no tiny model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from subclone_viz.families import FAMILIES, TINY_VOCAB, ImageClassifierFamily

VOCAB = TINY_VOCAB

# Every registered family's tiny models (the one tiny config each family file declares), plugins included.
TINY_FAMILIES: dict[str, Callable[[], nn.Module]] = {
    name: factory for family in FAMILIES.values() for name, factory in family.tiny_models().items()
}
IMAGE_MODELS = {
    name for family in FAMILIES.values() if issubclass(family, ImageClassifierFamily) for name in family.tiny_models()
}
NOISY_VECTORS = {
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "phi3",
    "olmo2",
    "gpt_neox",
    "hf-vit",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "gpt_oss",
    "deepseek_v3",
}


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TINY_FAMILIES[name]().eval()
    if name in NOISY_VECTORS:
        # Biases and norm weights start at zero or one (Gemma's (1 + w) norms at zero); noise makes their
        # slicing observable.
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 1:
                    param.add_(torch.randn_like(param) * 0.1)
            for name_, buffer in model.named_buffers():
                if name_.endswith("e_score_correction_bias"):  # DeepSeek-V3's router bias starts at zero
                    buffer.add_(torch.randn_like(buffer) * 0.1)
    return model


def tiny_batches(name: str, count: int = 3, batch_size: int = 2, seq_len: int = 12, pad: bool = True, seed: int = 1):
    """Random batches; text batches have some right padding (attention_mask 0) when ``pad``."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        if name in IMAGE_MODELS:
            batches.append(
                {
                    "pixel_values": torch.randn(batch_size, 1, 16, 16, generator=generator),  # (B, C, H, W)
                    "labels": torch.randint(0, 10, (batch_size,), generator=generator),
                }
            )
            continue
        input_ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=generator)  # (B, T)
        attention_mask = torch.ones_like(input_ids)
        if pad:
            attention_mask[0, seq_len - 4 :] = 0
            input_ids[0, seq_len - 4 :] = 0
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask})
    return batches


WORDS = [f"w{index}" for index in range(60)]


def word_tokenizer():
    """One token per word of WORDS and an EOS token to join documents; built offline, small enough for the
    tiny models' vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")
