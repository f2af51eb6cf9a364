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

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Iterable, Sized

import torch
from torch import nn
from tqdm.auto import tqdm

from .capture import block_input, hidden_of, record_stream, resumed, to_device, with_hidden
from .families import Family

if TYPE_CHECKING:
    from .parent import Parent

PROGRESS_DELAY = 5.0  # seconds before evaluate() shows a bar when not told either way


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
    progress: bool | None = None,
) -> Evaluation:
    """Mean loss over ``batches`` (each batch weighted equally), and accuracy for image classifiers.

    Args:
        model: the model to score, on its device.
        family: its adapter.
        batches: held-out batches.
        max_batches: use only the first ones.
        progress: a progress bar on stderr: True always, False never, None (the default) only once the run
            has lasted ``PROGRESS_DELAY`` seconds, so that short evaluations print nothing.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, correct, seen = [], 0, 0
    total = len(batches) if isinstance(batches, Sized) else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    bar = tqdm(total=total, desc="evaluate", unit="batch", leave=False, disable=progress is False,
               delay=0 if progress else PROGRESS_DELAY)
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            batch = to_device(batch, device)
            if family.task == "image-classification":
                logits = family.logits(model, batch)
                losses.append(float(nn.functional.cross_entropy(logits.float(), batch["labels"])))
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
                seen += batch["labels"].numel()
            else:
                losses.append(float(family.loss(model, batch)))
            bar.update()
    finally:
        bar.close()
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


@torch.no_grad()
def block_ablation(
    parent: "Parent",
    batches: Iterable[dict[str, torch.Tensor]],
    max_batches: int | None = None,
    progress: bool = True,
    reuse_prefix: bool = True,
) -> BlockAblation:
    """The parent's held-out loss with each single block removed, and with each single block duplicated.

    No weights are copied, and the result is exactly the model a full-width subclone with that block list
    computes (a unit test holds the two equal).

    Args:
        parent: the loaded parent.
        batches: held-out batches (each batch weighted equally, as in :func:`evaluate`).
        max_batches: use only the first ones.
        progress: show a progress bar.
        reuse_prefix: run each variant from the hidden state entering the first block it changes, kept from
            the batch's baseline pass, so that only the blocks after it run (the prefix is the same for every
            variant that keeps it; this holds L + 1 hidden states of one batch). False runs the whole
            forward for every variant, with hooks that skip or repeat one block.
    """
    batches = list(batches) if max_batches is None else [b for b, _ in zip(batches, range(max_batches))]
    if not batches:
        raise ValueError("no batches to evaluate on")
    if not reuse_prefix:
        return _hooked_block_ablation(parent, batches, progress)
    model, family = parent.model, parent.family
    blocks = list(family.blocks(model))
    baseline: list[float] = []
    removed: list[list[float]] = [[] for _ in blocks]
    duplicated: list[list[float]] = [[] for _ in blocks]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(batches) * (2 * len(blocks) + 1), desc="block ablation", disable=not progress, leave=False)
    try:
        for batch in batches:
            batch = to_device(batch, parent.input_device)
            with record_stream(family, model) as stream:
                baseline.append(float(family.loss(model, batch)))
            bar.update()
            states, form = stream.states, stream.output_like  # states[i] enters block i
            for i in range(len(blocks)):
                # Removed: block i passes its input on. Duplicated: block i runs again on its own output.
                with resumed(family, model, i, states[i], [None, *blocks[i + 1:]], form):
                    removed[i].append(float(family.loss(model, batch)))
                with resumed(family, model, i, states[i + 1], blocks[i:], form):
                    duplicated[i].append(float(family.loss(model, batch)))
                bar.update(2)
    finally:
        bar.close()
        model.train(was_training)
    return BlockAblation(
        baseline=_mean(baseline), removed=[_mean(v) for v in removed], duplicated=[_mean(v) for v in duplicated]
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)  # as evaluate() averages its batches, so that the two agree exactly


def _hooked_block_ablation(parent: "Parent", batches: list[dict[str, torch.Tensor]], progress: bool) -> BlockAblation:
    """The plain way: the whole forward for every variant, a hook making one block skip or repeat."""
    model, family = parent.model, parent.family
    baseline = evaluate(model, family, batches, progress=False).loss
    blocks = list(family.blocks(model))
    removed, duplicated = [], []
    for block in tqdm(blocks, desc="block ablation", disable=not progress, leave=False):
        for hook, results in ((_skip_block, removed), (_repeat_block, duplicated)):
            handle = block.register_forward_hook(hook, with_kwargs=True)
            try:
                results.append(evaluate(model, family, batches, progress=False).loss)
            finally:
                handle.remove()
    return BlockAblation(baseline=baseline, removed=removed, duplicated=duplicated)


def _skip_block(module: nn.Module, args, kwargs, output):
    return with_hidden(output, block_input(args, kwargs))


def _repeat_block(module: nn.Module, args, kwargs, output):
    # forward() rather than module(): calling the module would run this hook again.
    call_args = (hidden_of(output), *args[1:]) if args else ()
    call_kwargs = kwargs if args else {**kwargs, "hidden_states": hidden_of(output)}
    return module.forward(*call_args, **call_kwargs)
