"""What every architecture adapter says about its model, as data where possible.

The rest of the library never names a model class. It asks a :class:`Family` adapter, whose subclasses are
mostly class attributes:

* ``model_types``: the ``config.model_type`` values it accepts (one list, read by :meth:`Family.matches` and by
  the loader, which picks ``auto_class`` for them), and ``head``, the task head a model must have;
* ``block_list``: where the blocks live; the module roles, dotted paths relative to a block whose *inputs*
  the profiler reads: ``ffn_activation`` (the FFN hidden activation), ``attention_output`` (the per-head
  attention output) and, for post-norm blocks, ``residual_sum`` (the norm that receives x + f(x));
* ``rules``: for every parameter, what each tensor axis is (:class:`ParamRule`, kinds in :mod:`.axes`) and
  which axis is the fan-in of a linear layer (for scaling);
* ``config_fields``: which config attribute holds each :class:`Dims` field, so that reading the shape
  (:meth:`Family.dims`) and writing a smaller config (:meth:`Family.build`) need no code;
* ``derived_buffers``: buffers computed from the widths (Gemma's ``embed_scale`` = sqrt(hidden)), which a
  destination must recompute rather than copy.

Causal LMs share :class:`CausalLMFamily` (next-token logits and loss), image classifiers
:class:`ImageClassifierFamily`.

Example::

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from subclone_viz.families import family_of
    >>> model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100))
    >>> family = family_of(model)
    >>> family.dims(model)
    Dims(layers=2, hidden=64, ffn=256, heads=4, kv_heads=4, head_dim=16)
    >>> family.rule_for("transformer.h.0.attn.c_attn.weight")   # fused q|k|v: fan-in on axis 0 (Conv1D)
    ParamRule(pattern=..., axes=('residual', 'qkv'), fan_in_axis=0)
"""

from __future__ import annotations

import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import SubcloneVizError, UserError
from ._hf import build_model, resized_config
from .axes import Axis

Task = Literal["causal-lm", "masked-lm", "encoder", "image-classification"]

# Where Llama-style Hugging Face configs keep each Dims field.
HF_CONFIG_FIELDS = dict(
    layers="num_hidden_layers",
    hidden="hidden_size",
    ffn="intermediate_size",
    heads="num_attention_heads",
    kv_heads="num_key_value_heads",
)


@dataclass(frozen=True)
class Dims:
    """The shape facts of a transformer that subcloning changes."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    # Mixtures of experts (0 in dense models): routed experts per MoE layer, experts each token is routed to,
    # one expert's FFN width, the shared experts' width; MLA's rows per head in q_b_proj and kv_b_proj.
    experts: int = 0
    experts_per_tok: int = 0
    expert_ffn: int = 0
    shared_ffn: int = 0
    mla_q_dim: int = 0
    mla_kv_dim: int = 0

    @property
    def queries_per_kv(self) -> int:
        return self.heads // self.kv_heads

    def to_dict(self) -> dict[str, int]:
        """Every field, less the mixture-of-experts ones a dense model leaves at 0 (so that a dense parent's
        fingerprint, plans and profiles read the same as before those fields existed)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k in _DENSE_DIMS or v}

    def __repr__(self) -> str:
        return f"Dims({', '.join(f'{k}={v}' for k, v in self.to_dict().items())})"


_DENSE_DIMS = ("layers", "hidden", "ffn", "heads", "kv_heads", "head_dim")


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


class UnsupportedParameterError(SubcloneVizError, ValueError):
    pass


class NoReadoutError(UserError, ValueError):
    """A model without an output head (a bare encoder) asked for what only a head can say."""


# The vocabulary of every family's tiny models; test batches draw token ids below it.
TINY_VOCAB = 97
# The decoders' tiny shape: grouped-query attention (4 query heads on 2 KV heads), 4 blocks; a family's
# tiny_models overrides what its architecture needs (widths, head_dim, experts).
TINY_DECODER: dict[str, Any] = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=TINY_VOCAB,
    max_position_embeddings=64,
)
# Special tokens inside TINY_VOCAB, for configs whose defaults point past it.
TINY_SPECIAL_TOKENS: dict[str, Any] = dict(pad_token_id=0, bos_token_id=1, eos_token_id=1)


class Family(ABC):
    """One architecture family: class attributes say everything; subclasses add ``logits`` and ``loss``."""

    name: str
    description: str
    task: Task
    model_types: tuple[str, ...] = ()
    library: str = "transformers"  # the library whose own loader reads a saved destination
    auto_class: str = "AutoModel"  # the transformers Auto class that loads a saved destination
    head: str | None = None  # a module the task needs, e.g. "lm_head"
    block_list: str
    ffn_activation: str
    attention_output: str
    residual_sum: str | None = None
    rules: tuple[ParamRule, ...]
    buffer_rules: tuple[ParamRule, ...] = ()  # buffers sliced like parameters (a router's correction bias)
    config_fields: dict[str, str] = HF_CONFIG_FIELDS
    # True when head_dim is hidden / heads (GPT-2, BERT, ViT, GPT-NeoX): the hidden width fixes the head count.
    # False when head_dim is its own config field, written into the destination's config.
    heads_follow_hidden: bool = True
    # The norm applied after the last block (None for post-norm encoders) and the last linear layer, whose output
    # is the model's (an LM head, an MLM decoder, a classifier): the logit lens reads a hidden state through
    # them, and a profile stops the forward as the output layer is called.
    final_norm: str | None = None
    output_layer: str | None = None

    def __init__(self, model: nn.Module):
        """Adapters that depend on the model's layout (a task head's prefix, say) read it here."""

    @classmethod
    def tiny_models(cls) -> dict[str, Callable[[], nn.Module]]:
        """Tiny randomly initialized models, at least one for every ``model_type`` this family claims, named for
        the test battery (vocabulary :data:`TINY_VOCAB`, images 1 x 16 x 16 with 10 classes). The registry-bound
        tests build them and fail for a family that has none."""
        raise NotImplementedError(f"family {cls.name!r} declares no tiny models (Family.tiny_models)")

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter understands ``model``: a claimed model_type, with the task head present."""
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        return model_type in cls.model_types and (cls.head is None or _has_module(model, cls.head))

    def dims(self, model: nn.Module) -> Dims:
        """The parent's layers, widths and heads, read through ``config_fields``."""
        c, field = model.config, self.config_fields
        hidden, heads = getattr(c, field["hidden"]), getattr(c, field["heads"])
        return Dims(
            layers=getattr(c, field["layers"]),
            hidden=hidden,
            ffn=getattr(c, field["ffn"]),
            heads=heads,
            kv_heads=getattr(c, field.get("kv_heads", ""), None) or heads,
            head_dim=getattr(c, "head_dim", None) or hidden // heads,
        )

    def build(
        self, model: nn.Module, dims: Dims, layer_sources: list[int], device: str | torch.device = "meta"
    ) -> nn.Module:
        """A new model of ``model``'s own class with the given dims.

        On the ``"meta"`` device it is an empty shell for the subcloner to fill; on a real device it has the
        architecture's own random initialization (the baseline a subclone is compared against).

        ``layer_sources[j]`` is the parent block that destination block ``j`` comes from (per-layer settings
        such as sliding-window layer types follow it).
        """
        changes = {attr: getattr(dims, key) for key, attr in self.config_fields.items()}
        if not self.heads_follow_hidden:
            changes["head_dim"] = dims.head_dim
        return build_model(model, resized_config(model, changes, layer_sources), device)

    def derived_buffers(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Buffers of ``model`` that follow from its own widths (not copied from a parent), by name."""
        return {}

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.block_list)

    def ffn_activation_module(self, block: nn.Module) -> nn.Module | None:
        """The module whose input is the FFN hidden activation (B, T, ffn); None for a block without a dense FFN
        (a mixture-of-experts layer, whose experts the profile reads through :mod:`.moe`)."""
        return block.get_submodule(self.ffn_activation)

    def attention_output_module(self, block: nn.Module) -> nn.Module:
        """The module whose input is the per-head attention output (B, T, heads * head_dim)."""
        return block.get_submodule(self.attention_output)

    def residual_sum_module(self, block: nn.Module) -> nn.Module | None:
        """Post-norm blocks: the norm whose input is the pre-norm sum x + f(x). None for pre-norm."""
        return None if self.residual_sum is None else block.get_submodule(self.residual_sum)

    def output_module(self, model: nn.Module) -> nn.Module | None:
        """The last linear layer (``output_layer``), None when the family names none."""
        return None if self.output_layer is None else model.get_submodule(self.output_layer)

    def readout(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """What the model would output if its blocks ended at ``hidden`` (B, T, d): the final norm and the
        output head applied to it (the logit lens). At the last block's output it equals :meth:`logits`."""
        raise NoReadoutError(
            f"{type(model).__name__} ({self.description}) has no output head to read a hidden state through; "
            f"the logit lens needs a causal LM, a masked LM (BertForMaskedLM) or an image classifier"
        )

    @abstractmethod
    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on a batch and return its output logits (or hidden states for bare encoders)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of the model on a batch (mean over counted tokens or images)."""

    def param_info(self, name: str) -> ParamInfo:
        # Matched once per name: a profile asks for every parameter's rule each time it starts.
        known: dict[str, ParamInfo] = self.__dict__.setdefault("_param_infos", {})
        if name not in known:
            known[name] = self._match_rule(name)
        return known[name]

    def _match_rule(self, name: str) -> ParamInfo:
        for rule in self.rules:
            match = re.fullmatch(rule.pattern, name)
            if match:
                block = match.groupdict().get("block")
                return ParamInfo(name, rule, int(block) if block is not None else None)
        raise UnsupportedParameterError(
            f"{self.name} adapter has no slicing rule for parameter {name!r}; this model variant is not supported yet"
        )

    def rule_for(self, name: str) -> ParamRule:
        return self.param_info(name).rule

    def block_param_name(self, name: str, block: int) -> str:
        """``name`` with its block index replaced by ``block``."""
        prefix = f"{self.block_list}."
        rest = name[len(prefix) :]
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


class CausalLMFamily(Family):
    """Decoder-only language models: next-token logits and loss, loaded with ``AutoModelForCausalLM``."""

    task = "causal-lm"
    auto_class = "AutoModelForCausalLM"
    head = "lm_head"
    output_layer = "lm_head"

    def readout(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.final_norm is None:
            raise NoReadoutError(f"the {self.name} adapter names no final_norm, so the logit lens cannot read it")
        norm = model.get_submodule(self.final_norm)
        logits: torch.Tensor = model.get_submodule(self.output_layer or "")(norm(hidden))
        cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2 bounds its logits
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False).logits

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(self.logits(model, batch), batch)


class ImageClassifierFamily(Family):
    """Image classifiers: batches of ``pixel_values`` and ``labels``, cross-entropy loss."""

    task = "image-classification"

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(self.logits(model, batch).float(), batch["labels"])


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


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True
