"""What every architecture adapter says about its model, as data where possible.

The rest of the library never names a model class. It asks a :class:`Family` adapter:

* where the blocks live (``block_list``) and, per block, which modules carry the FFN hidden activations
  and the per-head attention output (their *inputs* are what the profiler reads);
* for every parameter, what each tensor axis is (:class:`ParamRule`): the residual stream
  (``"residual"``), FFN hidden neurons (``"ffn"``), query heads (``"q_heads"``), key/value heads
  (``"kv_heads"``), a fused q|k|v projection (``"qkv"``) or an axis kept whole (``"keep"``: vocabulary,
  positions, classes, image channels), and which axis is the fan-in of a linear layer (for scaling);
* how to build a smaller model of the same class (``build``) and how to run and score it.

Example::

    from transformers import GPT2Config, GPT2LMHeadModel
    from subclone_viz.families import family_of
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100))
    family = family_of(model)
    family.dims(model)   # Dims(layers=2, hidden=64, ffn=256, heads=4, kv_heads=4, head_dim=16)
    family.rule_for("transformer.h.0.attn.c_attn.weight")   # axes ("residual", "qkv"), fan-in axis 0
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Axis = Literal["keep", "residual", "ffn", "q_heads", "kv_heads", "qkv"]
Task = Literal["causal-lm", "masked-lm", "encoder", "image-classification"]


@dataclass(frozen=True)
class Dims:
    """The shape facts of a transformer that subcloning changes."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def queries_per_kv(self) -> int:
        return self.heads // self.kv_heads

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ParamRule:
    """How to slice the parameters whose names match ``pattern``.

    ``pattern`` is a regular expression matched against the full parameter name; block parameters write
    their block index as ``(?P<block>\\d+)``. ``axes`` names each tensor axis. ``fan_in_axis`` is set for
    the weight of a linear layer: the axis whose shrinking calls for weight scaling.
    """

    pattern: str
    axes: tuple[Axis, ...]
    fan_in_axis: int | None = None


@dataclass(frozen=True)
class ParamInfo:
    """A parameter name resolved against the rules: its rule and its block index (None outside blocks)."""

    name: str
    rule: ParamRule
    block: int | None


class UnsupportedParameterError(ValueError):
    pass


class Family(ABC):
    """One architecture family. Subclasses fill in the class attributes and the abstract methods."""

    name: str
    description: str
    task: Task
    block_list: str
    rules: tuple[ParamRule, ...]
    post_norm: bool = False
    # GPT-2, BERT and ViT derive head_dim from hidden/heads, so their hidden width fixes the head count.
    heads_follow_hidden: bool = True

    def __init__(self, model: nn.Module):
        """Adapters that depend on the model's layout (a task head's prefix, say) read it here."""

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter understands ``model``."""

    @abstractmethod
    def dims(self, model: nn.Module) -> Dims:
        """The parent's layers, widths and heads."""

    @abstractmethod
    def build(
        self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"
    ) -> nn.Module:
        """A new model of ``model``'s own class with the given dims.

        On the ``"meta"`` device it is an empty shell for the subcloner to fill; on a real device it has the
        architecture's own random initialization (the baseline a subclone is compared against).

        ``layer_sources[j]`` is the parent block that destination block ``j`` comes from (used by configs
        with per-layer settings such as sliding-window layer types).
        """

    @abstractmethod
    def ffn_activation_module(self, block: nn.Module) -> nn.Module:
        """The module whose input is the FFN hidden activation (B, T, ffn)."""

    @abstractmethod
    def attention_output_module(self, block: nn.Module) -> nn.Module:
        """The module whose input is the per-head attention output (B, T, heads * head_dim)."""

    def residual_sum_module(self, block: nn.Module) -> nn.Module | None:
        """Post-norm blocks: the norm whose input is the pre-norm sum x + f(x). None for pre-norm."""
        return None

    @abstractmethod
    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on a batch and return its output logits (or hidden states for bare encoders)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of the model on a batch (mean over counted tokens or images)."""

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.block_list)

    def param_info(self, name: str) -> ParamInfo:
        for rule in self.rules:
            match = re.fullmatch(rule.pattern, name)
            if match:
                block = match.groupdict().get("block")
                return ParamInfo(name, rule, int(block) if block is not None else None)
        raise UnsupportedParameterError(
            f"{self.name} adapter has no slicing rule for parameter {name!r}; this model variant is not "
            f"supported yet"
        )

    def rule_for(self, name: str) -> ParamRule:
        return self.param_info(name).rule

    def block_param_name(self, name: str, block: int) -> str:
        """``name`` with its block index replaced by ``block``."""
        prefix = f"{self.block_list}."
        rest = name[len(prefix):]
        return f"{prefix}{block}.{rest.split('.', 1)[1]}"

    def describe(self, model: nn.Module) -> str:
        d = self.dims(model)
        params = sum(p.numel() for p in model.parameters())
        return (
            f"{self.description} ({type(model).__name__}): {d.layers} layers, hidden {d.hidden}, "
            f"{d.heads} heads / {d.kv_heads} KV heads of {d.head_dim}, FFN {d.ffn}, "
            f"{params / 1e6:.1f}M parameters"
        )

    def save(self, model: nn.Module, directory: str, processor: Any = None) -> None:
        """Write an ordinary checkpoint (safetensors) that the model's own library loads."""
        model.save_pretrained(directory)
        if processor is not None and hasattr(processor, "save_pretrained"):
            processor.save_pretrained(directory)

    def extra_state(self, model: nn.Module) -> dict[str, Any]:
        """Family-specific facts worth recording with a saved destination."""
        return {}


def causal_lm_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy, ignoring positions whose target is padding."""
    input_ids = batch["input_ids"]  # (B, T)
    targets = input_ids[:, 1:].clone()  # (B, T-1)
    mask = batch.get("attention_mask")
    if mask is not None:
        targets[mask[:, 1:] == 0] = -100
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100
    )
