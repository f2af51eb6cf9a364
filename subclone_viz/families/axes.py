"""The axis vocabulary: what each tensor axis of a parameter is, and which parent indices a plan keeps on it.

A family's slicing rules name every axis of every parameter with one of these kinds; :func:`axis_indices`
turns a plan and a destination layer into the parent indices kept along that axis. Head axes are laid out
head-major (head ``h`` owns channels ``h * head_dim ... h * head_dim + head_dim - 1``).

========================  ==================================================================================
``"keep"``                kept whole (vocabulary, positions, classes, image channels, a per-head q/k norm)
``"residual"``            the residual stream: the plan's one shared channel order
``"ffn"``                 FFN hidden neurons of the layer
``"gate_up"``             a fused [gate | up] projection (Phi-3): the FFN neurons in each half
``"q_heads"``             query heads (also the per-head attention output)
``"kv_heads"``            key/value heads (grouped-query attention: whole groups are kept)
``"qkv"``                 a fused [q | k | v] projection; q has ``heads``, k and v ``kv_heads`` heads each
                          (GPT-2, timm ViT, Phi-3: also right when k and v are narrower than q)
``"qkv_per_head"``        fused q, k, v interleaved per head, [heads][3][head_dim] (GPT-NeoX)
``"head_index"``          one entry per query head (gpt-oss's attention sinks)
``"mla_q"``               MLA's ``q_b_proj`` rows: per head ``mla_q_dim`` rows (no-rope then rope part)
``"mla_kv"``              MLA's ``kv_b_proj`` rows: per head ``mla_kv_dim`` rows (key no-rope, then value)
``"experts"``             the routed experts of a mixture-of-experts layer (fused experts' axis 0, router rows)
``"expert_ffn"``          one expert's FFN neurons, ranked per expert: a list per kept expert (needs the
                          ``"experts"`` axis first, at axis 0)
``"expert_gate_up"``      one expert's [gate | up] rows (Mixtral, Qwen, OLMoE, DeepSeek), per kept expert
``"expert_gate_up_il"``   one expert's gate and up interleaved, [neuron][gate, up] (gpt-oss), per kept expert
``"shared_ffn"``          the shared expert's FFN neurons (Qwen2-MoE, DeepSeek-V3)
========================  ==================================================================================

The per-expert kinds give one index list per kept expert rather than one list: the slicer selects the kept
experts on axis 0 first, then each expert's own neurons.

Example::

    >>> import subclone_viz as sv
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> parent = sv.load_parent(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100)))
    >>> plan = sv.plan(parent, None, sv.DestinationSpec(layers=2, hidden=32), width="first")   # 2 of 4 heads
    >>> kept = axis_indices(plan, "qkv", layer=0)   # q channels, then k and v offset by the parent's q width
    >>> len(kept), kept[30:34], kept[62:66]
    (96, [30, 31, 64, 65], [94, 95, 128, 129])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..plan import SubclonePlan

Axis = Literal[
    "keep",
    "residual",
    "ffn",
    "gate_up",
    "q_heads",
    "kv_heads",
    "qkv",
    "qkv_per_head",
    "head_index",
    "mla_q",
    "mla_kv",
    "experts",
    "expert_ffn",
    "expert_gate_up",
    "expert_gate_up_il",
    "shared_ffn",
]
# The kinds whose indices are one list per kept expert.
PER_EXPERT_AXES = ("expert_ffn", "expert_gate_up", "expert_gate_up_il")


def _channels(heads: list[int], head_dim: int) -> list[int]:
    return [h * head_dim + t for h in heads for t in range(head_dim)]


def _gate_up(plan: "SubclonePlan", layer: int) -> list[int]:
    neurons, width = plan.ffn[layer], plan.parent_dims["ffn"]
    return neurons + [width + i for i in neurons]


def _qkv(plan: "SubclonePlan", layer: int) -> list[int]:
    head_dim, parent = plan.parent_dims["head_dim"], plan.parent_dims
    q = _channels(plan.heads[layer], head_dim)
    kv = _channels(plan.kv_heads[layer], head_dim)
    q_width, kv_width = parent["heads"] * head_dim, parent["kv_heads"] * head_dim
    return q + [q_width + i for i in kv] + [q_width + kv_width + i for i in kv]


def _qkv_per_head(plan: "SubclonePlan", layer: int) -> list[int]:
    head_dim = plan.parent_dims["head_dim"]
    return _channels([3 * h + part for h in plan.heads[layer] for part in range(3)], head_dim)


def _expert_gate_up(plan: "SubclonePlan", layer: int) -> list[list[int]]:
    width = plan.parent_dims["expert_ffn"]
    return [neurons + [width + i for i in neurons] for neurons in plan.expert_ffn[layer]]


def _expert_gate_up_interleaved(plan: "SubclonePlan", layer: int) -> list[list[int]]:
    return [[2 * i + part for i in neurons for part in range(2)] for neurons in plan.expert_ffn[layer]]


# Block axes take the destination layer; "keep" and "residual" are the same everywhere.
BLOCK_AXES: dict[str, Callable[["SubclonePlan", int], list[int] | list[list[int]]]] = {
    "ffn": lambda plan, layer: plan.ffn[layer],
    "gate_up": _gate_up,
    "q_heads": lambda plan, layer: _channels(plan.heads[layer], plan.parent_dims["head_dim"]),
    "kv_heads": lambda plan, layer: _channels(plan.kv_heads[layer], plan.parent_dims["head_dim"]),
    "qkv": _qkv,
    "qkv_per_head": _qkv_per_head,
    "head_index": lambda plan, layer: plan.heads[layer],
    "mla_q": lambda plan, layer: _channels(plan.heads[layer], plan.parent_dims["mla_q_dim"]),
    "mla_kv": lambda plan, layer: _channels(plan.heads[layer], plan.parent_dims["mla_kv_dim"]),
    "experts": lambda plan, layer: plan.experts[layer],
    "expert_ffn": lambda plan, layer: plan.expert_ffn[layer],
    "expert_gate_up": _expert_gate_up,
    "expert_gate_up_il": _expert_gate_up_interleaved,
    "shared_ffn": lambda plan, layer: plan.shared_ffn[layer],
}
AXES: tuple[str, ...] = ("keep", "residual", *BLOCK_AXES)


def axis_indices(plan: "SubclonePlan", axis: str, layer: int | None) -> list[int] | list[list[int]] | None:
    """The parent indices kept along one axis kind (None: the axis is kept whole; one list per kept expert for
    the :data:`PER_EXPERT_AXES`).

    Args:
        plan: the subclone plan.
        axis: one of :data:`AXES`.
        layer: the destination layer of a block parameter, None outside the blocks.
    """
    if axis == "keep":
        return None
    if axis == "residual":
        return plan.residual
    if axis not in BLOCK_AXES:
        raise ValueError(f"unknown axis kind {axis!r}; the kinds are {', '.join(AXES)}")
    if layer is None:
        raise ValueError(f"axis {axis!r} belongs to a block but the parameter is outside the blocks")
    return BLOCK_AXES[axis](plan, layer)
