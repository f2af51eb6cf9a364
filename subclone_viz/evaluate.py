"""Scoring a model on held-out batches, and the paper's single-block ablation (Fig. 2, bottom).

``evaluate`` gives the mean loss (and, for classifiers, the accuracy) over batches. ``block_ablation``
measures how much the pretrained parent's held-out loss changes when one block is removed or duplicated,
without any fine-tuning and without copying weights: middle blocks barely matter, the first and last ones do.

Example::

    result = block_ablation(parent, heldout_batches)
    result.removed        # (L,) loss with block i removed
    result.duplicated     # (L,) loss with block i run twice
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .families import Family
from .parent import input_device

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
    """Mean loss over ``batches`` (each batch weighted equally), and accuracy for image classifiers.

    Under several processes each scores a disjoint share of the batches and the sums (of batch losses, batches,
    correct and scored images) are added over the processes, so every process returns what one process would.
    """
    was_training = model.training
    model.eval()
    device = input_device(model)
    totals = torch.zeros(4, dtype=torch.float64)  # (sum of batch losses, batches, correct, images scored)
    chosen = batches if max_batches is None else itertools.islice(batches, max_batches)
    try:
        for batch in distributed.shard(chosen):
            batch = {k: v.to(device) for k, v in batch.items()}
            if family.task == "image-classification":
                logits = family.logits(model, batch)
                loss = float(nn.functional.cross_entropy(logits.float(), batch["labels"]))
                correct = int((logits.argmax(-1) == batch["labels"]).sum())
                totals += torch.tensor([loss, 1, correct, batch["labels"].numel()], dtype=torch.float64)
            else:
                totals += torch.tensor([float(family.loss(model, batch)), 1, 0, 0], dtype=torch.float64)
    finally:
        model.train(was_training)
    loss_sum, count, correct, seen = distributed.reduce_sum(totals).tolist()
    if not count:
        raise ValueError("no batches to evaluate on")
    return Evaluation(loss=loss_sum / count, accuracy=correct / seen if seen else None, batches=int(count))


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

    No weights are copied: a forward hook makes the block return its input (removed) or run the block a
    second time on its own output with the same arguments (duplicated), which is exactly the model a
    full-width subclone with that block list computes (a unit test holds the two equal). Under several
    processes each evaluation is sharded (:func:`evaluate`), so every process returns the same numbers.
    """
    batches = list(batches) if max_batches is None else [b for b, _ in zip(batches, range(max_batches))]
    model, family = parent.model, parent.family
    baseline = evaluate(model, family, batches).loss
    blocks = list(family.blocks(model))
    removed, duplicated = [], []
    for block in tqdm(blocks, desc="block ablation", disable=not distributed.show_progress(progress), leave=False):
        for hook, results in ((_skip_block, removed), (_repeat_block, duplicated)):
            handle = block.register_forward_hook(hook, with_kwargs=True)
            try:
                results.append(evaluate(model, family, batches).loss)
            finally:
                handle.remove()
    return BlockAblation(baseline=baseline, removed=removed, duplicated=duplicated)


def _with_hidden(output, hidden: torch.Tensor):
    """``output`` with its hidden states replaced (blocks return a tensor or a tuple led by one)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _block_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _skip_block(module: nn.Module, args, kwargs, output):
    return _with_hidden(output, _block_input(args, kwargs))


def _repeat_block(module: nn.Module, args, kwargs, output):
    # forward() rather than module(): calling the module would run this hook again.
    call_args = (_hidden(output), *args[1:]) if args else ()
    call_kwargs = kwargs if args else {**kwargs, "hidden_states": _hidden(output)}
    return module.forward(*call_args, **call_kwargs)
