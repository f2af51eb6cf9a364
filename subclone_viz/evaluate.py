"""Scoring a model on held-out batches, and the paper's single-block ablation (Fig. 2, bottom).

``evaluate`` gives the mean loss (and, for classifiers, the accuracy) over batches. ``block_ablation``
measures how much the pretrained parent's held-out loss changes when one block is removed or duplicated,
without any fine-tuning and without copying weights: middle blocks barely matter, the first and last ones do.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=16, batch_size=1, split="heldout",
    ...                           max_batches=1)
    >>> 2 < sv.evaluate(parent.model, parent.family, heldout).loss < 6   # nats per token
    True
    >>> result = sv.block_ablation(parent, heldout, progress=False)
    >>> len(result.removed), len(result.duplicated)   # loss with block i removed, and run twice
    (30, 30)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sized
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .capture import block_input, hidden_of, record_stream, resumed, to_device, with_hidden
from .families import Family
from .parent import input_device

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

    Under several processes each scores a disjoint share of the batches and the sums (of batch losses, batches,
    correct and scored images) are added over the processes, so every process returns what one process would.

    Args:
        model: the model to score, on its device.
        family: its adapter.
        batches: held-out batches.
        max_batches: use only the first ones.
        progress: a progress bar on stderr (main process only): True always, False never, None (the default)
            only once the run has lasted ``PROGRESS_DELAY`` seconds, so that short evaluations print nothing.
    """
    was_training = model.training
    model.eval()
    device = input_device(model)
    totals = torch.zeros(4, dtype=torch.float64)  # (sum of batch losses, batches, correct, images scored)
    chosen = batches if max_batches is None else itertools.islice(batches, max_batches)
    total = len(batches) if isinstance(batches, Sized) else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    bar = tqdm(
        total=total,
        desc="evaluate",
        unit="batch",
        leave=False,
        disable=not distributed.show_progress(progress is not False),
        delay=0 if progress else PROGRESS_DELAY,
    )
    try:
        # Padded: a DDP or FSDP model talks to the other processes in every forward, so all run as many.
        for batch, counts in distributed.padded_shard(chosen):
            batch = to_device(batch, device)
            if family.task == "image-classification":
                logits = family.logits(model, batch)
                loss = float(nn.functional.cross_entropy(logits.float(), batch["labels"]))
                correct = int((logits.argmax(-1) == batch["labels"]).sum())
                scored = torch.tensor([loss, 1, correct, batch["labels"].numel()], dtype=torch.float64)
            else:
                scored = torch.tensor([float(family.loss(model, batch)), 1, 0, 0], dtype=torch.float64)
            if counts:
                totals += scored
            bar.update(distributed.num_processes())  # every process scores one batch of each round
    finally:
        bar.close()
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
    computes (a unit test holds the two equal). Under several processes each scores a share of the batches
    and the sums are added, so every process returns the same numbers.

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
    count = len(blocks)
    # Sums over this process's batches, added in batch order as evaluate() adds them, so that the two agree
    # exactly: (baseline, removed 0..L-1, duplicated 0..L-1, batches).
    totals = torch.zeros(2 * count + 2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    bar = tqdm(
        total=len(batches) * (2 * count + 1),
        desc="block ablation",
        leave=False,
        disable=not distributed.show_progress(progress),
    )
    try:
        for batch in distributed.shard(batches):
            totals += _ablation_losses(family, model, blocks, to_device(batch, parent.input_device), bar)
            bar.update(distributed.num_processes())
    finally:
        bar.close()
        model.train(was_training)
    sums = distributed.reduce_sum(totals).tolist()
    means = [value / sums[-1] for value in sums[:-1]]
    return BlockAblation(baseline=means[0], removed=means[1 : 1 + count], duplicated=means[1 + count :])


def _ablation_losses(
    family: Family, model: nn.Module, blocks: list[nn.Module], batch: dict[str, torch.Tensor], bar: Any
) -> torch.Tensor:
    """One batch's (baseline, removed 0..L-1, duplicated 0..L-1, 1) losses, each variant resumed from the
    hidden state of the baseline pass that enters the first block it changes."""
    count = len(blocks)
    losses = torch.zeros(2 * count + 2, dtype=torch.float64)
    with record_stream(family, model) as stream:
        losses[0] = float(family.loss(model, batch))
    states, form = stream.states, stream.output_like  # states[i] enters block i
    for i in range(count):
        # Removed: block i passes its input on. Duplicated: block i runs again on its own output.
        with resumed(family, model, i, states[i], [None, *blocks[i + 1 :]], form):
            losses[1 + i] = float(family.loss(model, batch))
        with resumed(family, model, i, states[i + 1], blocks[i:], form):
            losses[1 + count + i] = float(family.loss(model, batch))
        bar.update(2 * distributed.num_processes())
    losses[-1] = 1
    return losses


def _hooked_block_ablation(parent: "Parent", batches: list[dict[str, torch.Tensor]], progress: bool) -> BlockAblation:
    """The plain way: the whole forward for every variant, a hook making one block skip or repeat."""
    model, family = parent.model, parent.family
    baseline = evaluate(model, family, batches, progress=False).loss
    blocks = list(family.blocks(model))
    removed, duplicated = [], []
    for block in tqdm(blocks, desc="block ablation", disable=not distributed.show_progress(progress), leave=False):
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
