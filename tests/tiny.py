"""Tiny randomly initialized parents of every registered family, and random batches for them.

The models come from each registered family's ``tiny_models()`` (its file in subclone_viz/families/). Each
factory builds a model in well under a second; widths are chosen so that every slicing path is exercised: grouped-query attention (llama, mistral), q/k/v biases (qwen2), per-head q/k norms (qwen3,
gemma3), an untied LM head (llama-untied), post-norm (bert, bert-mlm), fused qkv (gpt2, vit), multi-query
attention, sandwich norms and sliding-window layer types narrower than the batches (gemma2, gemma3).
The family tests fail for a family or a claimed model_type that has no tiny model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from subclone_viz.families import FAMILIES, TINY_VOCAB, ImageClassifierFamily

if TYPE_CHECKING:
    from subclone_viz.study import SpeedupStudy
    from subclone_viz.train import History

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


def simulated_history(label: str, L0: float, steps: int = 300) -> "History":
    """A run whose held-out losses follow the forecast's law exactly (A=3, alpha=0.5, C=0.002), every 10 steps."""
    from subclone_viz.forecast import LearningCurve
    from subclone_viz.train import EvalRecord, History, StepRecord, TrainSettings

    lrs = TrainSettings(steps=steps, lr=1e-3).learning_rates()
    curve = LearningCurve.simulate(lrs, L0=L0, A=3.0, alpha=0.5, C=0.002, every=10)
    return History(
        label=label,
        config={"steps": steps, "lr": 1e-3, "schedule": "cosine", "warmup": None},
        steps=[StepRecord(step=s, seen=64 * s, loss=0.0, lr=lrs[s - 1], time=float(s)) for s in range(1, steps + 1)],
        evals=[
            EvalRecord(step=s, seen=64 * s, loss=v, accuracy=None, time=float(s))
            for s, v in zip(curve.steps, curve.losses)
        ],
    )


def simulated_study() -> "SpeedupStudy":
    """A study of one size whose subclone ends (at L0 1.9) below where random init (L0 2.0) can get in its budget."""
    from subclone_viz.compare import speedup
    from subclone_viz.study import SpeedupStudy

    histories = {"random": simulated_history("random", 2.0), "subclone": simulated_history("subclone", 1.9)}
    size = {
        "label": "4 x 64",
        "parameters": 1000,
        "best_lr": {"random": 1e-3, "subclone": 1e-3},
        "initial_loss": {init: h.evals[0].loss for init, h in histories.items()},
        "final_loss": {init: h.evals[-1].loss for init, h in histories.items()},
        "speedups": {init: speedup(histories["random"], h).to_dict() for init, h in histories.items()},
        "runs": {init: {"0.001": h.to_dict()} for init, h in histories.items()},
    }
    return SpeedupStudy({"parent": {"name": "simulated"}, "seed": 0}, [size])
