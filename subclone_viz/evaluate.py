"""Scoring a model on held-out batches, and the paper's single-block ablation (Fig. 2, bottom).

``evaluate`` gives the mean loss (and, for classifiers, the accuracy) over batches. ``block_ablation``
measures how much the pretrained parent's held-out loss changes when one block is removed or duplicated,
without any fine-tuning: middle blocks barely matter, the first and last ones do.

Example::

    result = block_ablation(parent, heldout_batches)
    result.removed        # (L,) loss with block i removed
    result.duplicated     # (L,) loss with block i run twice
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .families import Family

if TYPE_CHECKING:
    from .parent import Parent


@dataclass
class Evaluation:
    loss: float
    accuracy: float | None
    batches: int


@torch.no_grad()
def evaluate(
    model: nn.Module,
    family: Family,
    batches: Iterable[dict[str, torch.Tensor]],
    max_batches: int | None = None,
) -> Evaluation:
    """Mean loss over ``batches`` (each batch weighted equally), and accuracy for image classifiers."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, correct, seen = [], 0, 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            batch = {k: v.to(device) for k, v in batch.items()}
            if family.task == "image-classification":
                logits = family.logits(model, batch)
                losses.append(float(nn.functional.cross_entropy(logits.float(), batch["labels"])))
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
                seen += batch["labels"].numel()
            else:
                losses.append(float(family.loss(model, batch)))
    finally:
        model.train(was_training)
    if not losses:
        raise ValueError("no batches to evaluate on")
    return Evaluation(loss=sum(losses) / len(losses), accuracy=correct / seen if seen else None, batches=len(losses))


@dataclass
class BlockAblation:
    """Held-out loss of the parent as is, with each block removed, and with each block duplicated."""

    baseline: float
    removed: list[float]
    duplicated: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def block_ablation(
    parent: "Parent",
    batches: Iterable[dict[str, torch.Tensor]],
    max_batches: int | None = None,
    progress: bool = True,
) -> BlockAblation:
    """The parent's held-out loss with each single block removed, and with each single block duplicated.

    Each variant is a full-width subclone with an explicit block list, so it runs through exactly the code
    path a destination does.
    """
    from .plan import DestinationSpec, plan
    from .subclone import subclone

    batches = list(batches) if max_batches is None else [b for b, _ in zip(batches, range(max_batches))]
    dims = parent.dims
    full = dict(hidden=dims.hidden, ffn=dims.ffn, heads=dims.heads, kv_heads=dims.kv_heads)
    baseline = evaluate(parent.model, parent.family, batches).loss

    def loss_with(layers: list[int]) -> float:
        variant = plan(parent, None, DestinationSpec(layers=layers, **full), width="first", scaling="none")
        model = subclone(parent, variant)
        return evaluate(model, parent.family, batches).loss

    removed, duplicated = [], []
    blocks = range(dims.layers)
    for i in tqdm(blocks, desc="block ablation", disable=not progress, leave=False):
        others = [j for j in blocks if j != i]
        removed.append(loss_with(others) if others else float("nan"))
        duplicated.append(loss_with(sorted([*blocks, i])))
    return BlockAblation(baseline=baseline, removed=removed, duplicated=duplicated)
