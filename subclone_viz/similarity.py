"""Where a destination's hidden states part from its parent's: linear CKA and cosine, layer by layer.

For each residual layer of the destination (the embedding output, then each block's output) and the parent
layer it came from (the plan's kept block), on the same tokens:

* **linear CKA** (Kornblith et al., 2019) between the parent's hidden states X (tokens x d_p) and the
  destination's Y (tokens x d_d): ``||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with Xc, Yc centred over
  tokens. It ignores rotations and scale, so it compares what the two layers represent even though the
  destination keeps fewer channels;
* **cosine on the kept channels**: the mean over tokens of cos(x[kept], y), the parent's vector restricted to
  the channels the plan kept (in the plan's order) against the destination's. It sees scale changes that CKA
  forgives and is 1 only where the destination reproduces the parent channel for channel;
* **the cosine matrix** of every parent layer against every destination layer (same measure), for a heat map:
  a depth cut shows as a jump in the matching diagonal, a width cut as a dimming of every cell.

Everything is streamed: per batch, one forward of the parent (stopped before its head) and one of the
destination; nothing but running sums outlives a batch. CKA needs no token x token Gram matrix: centred
cross-products follow from the sums X^T X, Y^T Y, X^T Y, sum X and sum Y (float64), which for each destination
layer take (d_p^2 + d_d^2 + d_p d_d + d_p + d_d) x 8 bytes (SmolLM2 576 -> 384: 5.6 MB per layer, 118 MB for 21
layers), whatever the number of tokens. Within a batch the parent's counted hidden states at its L_p + 1
layers are held until the destination has run (tokens x d_p x (L_p + 1) x 4 bytes: 150 MB for 2,048 tokens of
SmolLM2). A reorder-only plan (every block, every channel, permuted) scores 1.0 everywhere.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, split="heldout",
    ...                           max_batches=2)
    >>> prof = sv.profile(parent, batches, progress=False)
    >>> p = sv.plan(parent, prof, sv.DestinationSpec(layers=20, hidden=384))
    >>> similarity = sv.layer_similarity(parent, sv.subclone(parent, p), p, batches)
    >>> similarity.cka.shape, similarity.cosine_matrix.shape     # destination layers; parent x destination
    ((21,), (31, 21))
    >>> bool(similarity.cka[0] > 0.5)                             # the embeddings keep most of what they say
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .capture import BlockStep, capture_blocks, counted_rows, forward_before, to_device, token_mask
from .cut import PlanMismatchError, Subject, check_parent, subject
from .records import Record, register_record

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import SubclonePlan


@register_record
@dataclass
class LayerSimilarity(Record):
    """Per destination residual layer (embedding, then each block): CKA and kept-channel cosine against the
    parent layer it came from; and the cosine of every parent layer against every destination layer."""

    FORMAT = "subclone_viz.layer_similarity"
    VERSION = 1

    parent: str
    destination: str
    parent_labels: list[str]  # L_p + 1 residual layers
    destination_labels: list[str]  # L_d + 1 residual layers
    matches: list[int]  # per destination layer, the parent residual layer it came from
    cka: np.ndarray  # (L_d + 1,)
    cosine: np.ndarray  # (L_d + 1,) mean cos(x[kept], y) against the matching parent layer
    cosine_matrix: np.ndarray  # (L_p + 1, L_d + 1) the same against every parent layer
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "destination": self.destination,
            "parent_labels": self.parent_labels,
            "destination_labels": self.destination_labels,
            "matches": self.matches,
            "cka": self.cka.tolist(),
            "cosine": self.cosine.tolist(),
            "cosine_matrix": self.cosine_matrix.tolist(),
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LayerSimilarity":
        record = cls(
            parent=str(data["parent"]),
            destination=str(data["destination"]),
            parent_labels=[str(x) for x in data["parent_labels"]],
            destination_labels=[str(x) for x in data["destination_labels"]],
            matches=[int(x) for x in data["matches"]],
            cka=np.asarray(data["cka"], dtype=np.float64),
            cosine=np.asarray(data["cosine"], dtype=np.float64),
            cosine_matrix=np.asarray(data["cosine_matrix"], dtype=np.float64),
            tokens=int(data["tokens"]),
        )
        p, d = len(record.parent_labels), len(record.destination_labels)
        if record.cka.shape != (d,) or record.cosine.shape != (d,) or record.cosine_matrix.shape != (p, d):
            raise ValueError(f"cka, cosine and cosine_matrix must be ({d},), ({d},) and ({p}, {d})")
        if len(record.matches) != d or not all(0 <= m < p for m in record.matches):
            raise ValueError(f"matches must name one of {p} parent layers for each of {d} destination layers")
        return record


class _CKASums:
    """Running sums for the linear CKA of one (parent layer, destination layer) pair, in float64."""

    def __init__(self) -> None:
        self.parts: list[torch.Tensor] = []  # X^T X, Y^T Y, X^T Y, sum X, sum Y
        self.n = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double(), y.double()  # (N, d_p), (N, d_d)
        parts = [x.T @ x, y.T @ y, x.T @ y, x.sum(0), y.sum(0)]
        self.parts = parts if not self.parts else [total + part for total, part in zip(self.parts, parts)]
        self.n += x.shape[0]

    def cka(self) -> float:
        xx, yy, xy, sx, sy = self.parts
        mx, my = sx / self.n, sy / self.n
        cxx = xx - self.n * torch.outer(mx, mx)
        cyy = yy - self.n * torch.outer(my, my)
        cxy = xy - self.n * torch.outer(mx, my)
        denominator = torch.linalg.norm(cxx) * torch.linalg.norm(cyy)
        return float(torch.linalg.norm(cxy) ** 2 / denominator) if denominator > 0 else float("nan")


def _residual_rows(item: Subject, batch: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The counted rows (N, d) of every residual layer of one forward, fp32, without running the head."""
    states: list[torch.Tensor | None] = [None] * len(item.sources)
    mask = token_mask(dict(batch))

    def keep(step: BlockStep) -> None:
        if step.index == 0:
            states[0] = counted_rows(step.input, mask)
        states[step.index + 1] = counted_rows(step.output, mask)

    module = item.module
    device_batch = to_device(dict(batch), next(module.parameters()).device)
    with capture_blocks(item.family, module, on_block=keep):
        forward_before(lambda: item.family.logits(module, device_batch), item.family.output_module(module))
    taken = [state for state in states if state is not None]
    if len(taken) != len(states):
        raise RuntimeError(f"a hook never fired: {item.name}'s forward skipped a block")
    return taken


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _check_pair(parent: Subject, destination: Subject) -> "SubclonePlan":
    plan = destination.plan
    if plan is None:
        raise PlanMismatchError(f"{destination.name} carries no plan: pass the plan it was cut by (plan=...)")
    check_parent(plan, parent)
    return plan


@torch.no_grad()
def layer_similarity(
    parent: "Parent | nn.Module",
    destination: nn.Module,
    plan: "SubclonePlan | Mapping[str, Any] | None",
    batches: Iterable[Mapping[str, torch.Tensor]],
    max_batches: int | None = None,
) -> LayerSimilarity:
    """Compare ``destination``'s hidden states with ``parent``'s at the blocks they came from.

    Args:
        parent: the Parent (or its model) the destination was cut from.
        destination: the destination (before or after training).
        plan: the plan it was cut by (None: the one :func:`~subclone_viz.subclone` attached to it).
        batches: held-out batches, run through both models.
        max_batches: stop after this many batches (None: every one).
    """
    p_item, d_item = subject(parent), subject(destination, plan=plan, name="destination")
    plan = _check_pair(p_item, d_item)
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches={max_batches} must be at least 1 (or None for every batch)")
    kept = torch.as_tensor(plan.residual)
    matches = [0] + [source + 1 for source in plan.layers]
    sums = [_CKASums() for _ in matches]
    cosine = torch.zeros(len(matches), dtype=torch.float64)
    matrix = torch.zeros(len(p_item.sources), len(matches), dtype=torch.float64)
    tokens = 0
    states = [(m, m.training) for m in (p_item.module, d_item.module)]
    try:
        for model, _ in states:
            model.eval()
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            xs = _residual_rows(p_item, batch)  # L_p + 1 of (N, d_p)
            ys = _residual_rows(d_item, batch)  # L_d + 1 of (N, d_d)
            x_kept = torch.stack([_unit(x[:, kept.to(x.device)]) for x in xs])  # (L_p + 1, N, d_d)
            for j, (m, y) in enumerate(zip(matches, ys)):
                y_unit = _unit(y).to(x_kept.device)
                column = torch.einsum("lnd,nd->l", x_kept, y_unit).double().cpu()  # (L_p + 1,) summed cosines
                matrix[:, j] += column
                cosine[j] += column[m]
                sums[j].add(xs[m], y.to(xs[m].device))
            tokens += xs[0].shape[0]
    finally:
        for model, was_training in states:
            model.train(was_training)
    if tokens == 0:
        raise ValueError("the batches held no counted tokens: nothing was compared")
    return LayerSimilarity(
        parent=p_item.name,
        destination=d_item.name,
        parent_labels=p_item.labels,
        destination_labels=d_item.labels,
        matches=matches,
        cka=np.array([s.cka() for s in sums]),
        cosine=(cosine / tokens).numpy(),
        cosine_matrix=(matrix / tokens).numpy(),
        tokens=tokens,
    )
