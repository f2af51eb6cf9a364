"""Tiny randomly initialized parents of every supported family, and random batches for them.

Each factory builds a model in well under a second; widths are chosen so that every slicing path is
exercised: grouped-query attention (llama, mistral), q/k/v biases (qwen2), per-head q/k norms (qwen3,
gemma3), an untied LM head (llama-untied), post-norm (bert, bert-mlm), fused qkv (gpt2, vit), multi-query
attention, sandwich norms and sliding-window layer types narrower than the batches (gemma2, gemma3).
The family tests fail for a family or a claimed model_type that has no model here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

VOCAB = 97


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=32, n_head=4, n_positions=64, vocab_size=VOCAB, bos_token_id=1, eos_token_id=1))


def _llama(tie: bool = True) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=48, intermediate_size=80, num_hidden_layers=4, num_attention_heads=6,
            num_key_value_heads=2, head_dim=8, vocab_size=VOCAB, max_position_embeddings=64,
            tie_word_embeddings=tie,
        )
    )


def _mistral() -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(
        MistralConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, sliding_window=16,
        )
    )


def _qwen2() -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(
        Qwen2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=True,
        )
    )


def _qwen3() -> nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(
        Qwen3Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, vocab_size=VOCAB, max_position_embeddings=64,
        )
    )


# Gemma 3 270M's proportions, shrunk: 4 query heads on 1 KV head, head_dim wider than hidden / heads.
_GEMMA = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
    head_dim=16, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0,
)
_SLIDING = dict(sliding_window=4, layer_types=["sliding_attention", "full_attention"] * 2)


def _gemma(version: int) -> nn.Module:
    import transformers

    if version == 1:
        return transformers.GemmaForCausalLM(transformers.GemmaConfig(**_GEMMA))
    if version == 2:
        return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**_GEMMA, **_SLIDING))
    return transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**_GEMMA, **_SLIDING))


def _phi3() -> nn.Module:
    from transformers import Phi3Config, Phi3ForCausalLM

    return Phi3ForCausalLM(
        Phi3Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0,
            bos_token_id=1, eos_token_id=1,
        )
    )


def _olmo2() -> nn.Module:
    from transformers import Olmo2Config, Olmo2ForCausalLM

    return Olmo2ForCausalLM(
        Olmo2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0,
            bos_token_id=1, eos_token_id=1,
        )
    )


def _gpt_neox() -> nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    # Pythia's partial rotary (a quarter of each head), parallel residual and untied head.
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=VOCAB,
            max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True, bos_token_id=1,
            eos_token_id=1,
        )
    )


def _bert(mlm: bool = False) -> nn.Module:
    from transformers import BertConfig, BertForMaskedLM, BertModel

    config = BertConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        vocab_size=VOCAB, max_position_embeddings=64,
    )
    return BertForMaskedLM(config) if mlm else BertModel(config)


def _vit() -> nn.Module:
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, in_chans=1, depth=4,
        embed_dim=32, num_heads=4, num_classes=10,
    )


def _hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(
        ViTConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=16,
            patch_size=4, num_channels=1, num_labels=10,
        )
    )


IMAGE_MODELS = {"vit", "hf-vit"}
NOISY_VECTORS = {"qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo2", "gpt_neox", "hf-vit"}
TINY_FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "gpt2": _gpt2,
    "llama": _llama,
    "llama-untied": lambda: _llama(tie=False),
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "gemma": lambda: _gemma(1),
    "gemma2": lambda: _gemma(2),
    "gemma3": lambda: _gemma(3),
    "phi3": _phi3,
    "olmo2": _olmo2,
    "gpt_neox": _gpt_neox,
    "bert": _bert,
    "bert-mlm": lambda: _bert(mlm=True),
    "vit": _vit,
    "hf-vit": _hf_vit,
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
            attention_mask[0, seq_len - 4:] = 0
            input_ids[0, seq_len - 4:] = 0
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
