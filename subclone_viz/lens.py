"""The logit lens: what a model would predict if its blocks ended at each residual layer.

Each residual layer's hidden state (the embedding output, then every block's output) is read through the
model's own final norm and output head (:meth:`Family.readout <subclone_viz.families.Family.readout>`), as if
the remaining blocks were not there. At the last layer this is exactly the model's output. Per layer and
token the :class:`LogitLens` keeps the top-k predictions with their probabilities, the rank and probability of
the actual target, and per layer the mean loss over the counted targets.

Targets: the next token for a causal LM; the token at the same position for a masked LM (BERT's MLM head on
unmasked text mostly predicts its input, so mask some tokens in the batch to see it guess); the label for an
image classifier, read through its own head on the class token (or its pooled tokens), one prediction per
image. A bare encoder has no head to read through and is refused.

For a destination, each layer is labelled with the parent block it came from (its plan, carried by
:func:`~subclone_viz.subclone` or passed as ``plan=``), so a parent's and a destination's lenses line up: blocks
the plan removed are the parent layers no destination layer names.

Cost: one forward without the head, then one head application per residual layer (L + 1 of them) at every
position read. A large vocabulary makes the head dear (SmolLM2's 49,152 x 576 head is about a quarter of its
forward on the CPU), so the lens at every layer and position costs several forwards: (1 - h) + (L + 1) h
forwards for a head share h, whatever the implementation, because each probability needs the whole row of
logits. ``positions=`` reads only some positions (the "predictions through depth" of one token: then the lens
costs less than one forward) and ``layers=`` only some layers.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batch = parent.tokenizer(["The capital of France is Paris."], return_tensors="pt")
    >>> lens = sv.logit_lens(parent, None, dict(batch), top_k=3)
    >>> lens.labels[:3], len(lens.labels)
    (['embedding', 'block 0', 'block 1'], 31)
    >>> lens.loss.shape                     # mean next-token loss read at each residual layer
    (31,)
    >>> [text for text, p in lens.predictions(layer=-1, sequence=0, position=4)][:1]   # after ' is'
    [' Paris']
    >>> one = sv.logit_lens(parent, None, dict(batch), top_k=3, positions=[4])   # one token: the cheap path
    >>> one.top_ids.shape, bool((one.top_ids[:, 0, 0] == lens.top_ids[:, 0, 4]).all())   # the full lens's tokens
    ((31, 1, 1, 3), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .capture import forward_before, record_stream, to_device
from .cut import subject
from .families import Family
from .families.base import NoReadoutError
from .records import Record, register_record

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import SubclonePlan

READABLE_TASKS = ("causal-lm", "masked-lm", "image-classification")
CHUNK_ELEMENTS = 2**24  # logits computed at once per layer (64 MiB in fp32)
SCORE_ROWS = 16  # rows of logits a CPU scores at once: 16 x 49,152 in fp32 is 3 MiB, within its cache


@register_record
@dataclass
class LogitLens(Record):
    """Predictions read at every residual layer. Arrays are indexed [layer, sequence, column(, k)]: a column per
    position read (``positions``; None: every position, column = position); an image classifier has one
    position per image. Targets of -1 (padding, the last position) do not count."""

    FORMAT = "subclone_viz.logit_lens"
    VERSION = 2
    READS = (1,)  # 1: no ``positions`` (every position read)

    model: str
    task: str
    labels: list[str]  # per residual layer: 'embedding', 'block j' or 'block j (parent i)'
    sources: list[int | None]  # per residual layer: the parent block it came from (None: the embedding)
    tokens: list[list[str]] | None  # input tokens as text per sequence (None for images or without a tokenizer)
    targets: np.ndarray  # (B, P) the id each position read should predict, -1 where none counts
    top_ids: np.ndarray  # (layers, B, T, k)
    top_probs: np.ndarray  # (layers, B, T, k)
    target_rank: np.ndarray  # (layers, B, T) 0 = the top prediction; -1 where no target
    target_prob: np.ndarray  # (layers, B, T) NaN where no target
    id_texts: dict[int, str]  # text of every id in top_ids and targets (empty without a tokenizer)
    positions: list[int] | None = None  # the positions read, one per column (None: every position)

    def column(self, position: int) -> int:
        """The column of the arrays that holds ``position`` (a ValueError naming the positions read if none)."""
        if self.positions is None:
            return position
        if position not in self.positions:
            raise ValueError(
                f"position {position} was not read: this lens read positions {self.positions} (logit_lens(positions=...))"
            )
        return self.positions.index(position)

    @property
    def loss(self) -> np.ndarray:
        """(layers,) mean cross-entropy of the counted targets (at the positions read) at each layer (nats)."""
        counted = self.targets >= 0  # (B, T)
        return np.array([-np.log(np.maximum(p[counted], 1e-45)).mean() for p in self.target_prob])

    @property
    def accuracy(self) -> np.ndarray:
        """(layers,) share of counted targets that are the top prediction at each layer."""
        counted = self.targets >= 0
        return np.array([(r[counted] == 0).mean() for r in self.target_rank])

    def text(self, token_id: int) -> str:
        return self.id_texts.get(int(token_id), str(int(token_id)))

    def predictions(self, layer: int, sequence: int = 0, position: int = 0) -> list[tuple[str, float]]:
        """The top-k (text, probability) at one layer, sequence and position."""
        column = self.column(position)
        ids, probs = self.top_ids[layer, sequence, column], self.top_probs[layer, sequence, column]
        return [(self.text(i), float(p)) for i, p in zip(ids, probs)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "labels": self.labels,
            "sources": self.sources,
            "tokens": self.tokens,
            "targets": self.targets.tolist(),
            "top_ids": self.top_ids.tolist(),
            "top_probs": self.top_probs.tolist(),
            "target_rank": self.target_rank.tolist(),
            "target_prob": [
                [[None if np.isnan(p) else float(p) for p in row] for row in layer] for layer in self.target_prob
            ],
            "id_texts": {str(k): v for k, v in self.id_texts.items()},
            "loss": self.loss.tolist(),
            "positions": self.positions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LogitLens":
        targets = np.asarray(data["targets"], dtype=np.int64)
        top_ids = np.asarray(data["top_ids"], dtype=np.int64)
        lens = cls(
            model=str(data["model"]),
            task=str(data["task"]),
            labels=[str(x) for x in data["labels"]],
            sources=list(data["sources"]),
            tokens=data["tokens"],
            targets=targets,
            top_ids=top_ids,
            top_probs=np.asarray(data["top_probs"], dtype=np.float64),
            target_rank=np.asarray(data["target_rank"], dtype=np.int64),
            target_prob=np.asarray(data["target_prob"], dtype=np.float64),
            id_texts={int(k): str(v) for k, v in dict(data["id_texts"]).items()},
            positions=None if data.get("positions") is None else [int(p) for p in data["positions"]],
        )
        layers = len(lens.labels)
        if top_ids.ndim != 4 or top_ids.shape[:3] != (layers, *targets.shape) or lens.top_probs.shape != top_ids.shape:
            raise ValueError(f"top_ids {top_ids.shape} do not match {layers} layers of targets {targets.shape}")
        if lens.target_rank.shape != top_ids.shape[:3] or lens.target_prob.shape != top_ids.shape[:3]:
            raise ValueError("target_rank and target_prob must be (layers, sequences, positions)")
        if len(lens.sources) != layers:
            raise ValueError(f"{len(lens.sources)} sources for {layers} layers")
        if lens.positions is not None and len(lens.positions) != targets.shape[1]:
            raise ValueError(f"{len(lens.positions)} positions for {targets.shape[1]} columns of targets")
        return lens


def lens_targets(family: Family, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, T) the id each position predicts, -1 where none counts (padding, a causal LM's last position)."""
    if family.task == "image-classification":
        labels = batch.get("labels")
        count = batch["pixel_values"].shape[0]
        return (labels.reshape(-1, 1).long() if labels is not None else torch.full((count, 1), -1)).cpu()
    input_ids = batch["input_ids"].cpu()  # (B, T)
    mask = batch.get("attention_mask")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.cpu().bool()
    if family.task == "masked-lm":
        return input_ids.masked_fill(~mask, -1)
    targets = torch.full_like(input_ids, -1)
    targets[:, :-1] = input_ids[:, 1:].masked_fill(~mask[:, 1:], -1)
    return targets


def check_readable(family: Family, model: nn.Module, name: str) -> None:
    """Refuse, before any forward, a model without an output head to read hidden states through."""
    if family.task not in READABLE_TASKS:
        raise NoReadoutError(
            f"{name} ({family.description}, task {family.task!r}) has no output head to read its layers through: "
            f"the logit lens needs a causal LM, a masked LM (e.g. BertForMaskedLM) or an image classifier"
        )


def check_batch(family: Family, batch: Any, name: str) -> None:
    key = "pixel_values" if family.task == "image-classification" else "input_ids"
    if not isinstance(batch, Mapping) or not isinstance(batch.get(key), torch.Tensor):
        found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(f"{name} reads batches with a {key!r} tensor; got {found}")
    if batch[key].shape[0] == 0 or (key == "input_ids" and batch[key].shape[-1] == 0):
        raise ValueError(f"the batch for {name} is empty ({key} of shape {tuple(batch[key].shape)})")


def _scores(logits: torch.Tensor, target: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Top-k ids and probabilities, target rank and probability of logits (n, V) against targets (n,).

    Read a few rows at a time, from the logits themselves: each block stays in the CPU's cache through the
    five passes over it (log-sum-exp, top-k, gather, compare, count), and no (n, V) log-probabilities are
    written. Ranks count the logits above the target's, exactly as the model orders them."""
    rows = SCORE_ROWS if logits.device.type == "cpu" else logits.shape[0]  # an accelerator takes the chunk at once
    parts = []
    for start in range(0, logits.shape[0], rows):
        block, wanted = logits[start : start + rows].float(), target[start : start + rows]  # (r, V), (r,)
        log_norm = torch.logsumexp(block, dim=-1, keepdim=True)  # (r, 1)
        top = block.topk(k, dim=-1)
        picked = block.gather(1, wanted.clamp(min=0)[:, None])  # (r, 1)
        rank = (block > picked).sum(-1, dtype=torch.int32).long()  # int32: half the time of int64
        counted = wanted >= 0
        parts.append(
            [
                top.indices,
                (top.values - log_norm).exp(),
                torch.where(counted, rank, -1),
                torch.where(counted, (picked - log_norm)[:, 0].exp(), torch.nan),
            ]
        )
    return [torch.cat(column) for column in zip(*parts)]


def _layer_readings(
    family: Family, model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, k: int, width: int
) -> list[np.ndarray]:
    """:func:`_scores` of one layer's hidden state (B, T, d), read through the head in chunks of rows."""
    image = family.task == "image-classification"
    rows = hidden if image else hidden.reshape(1, -1, hidden.shape[-1])  # images (B, S, d); text (1, B*T, d)
    total = rows.shape[0] if image else rows.shape[1]  # one prediction per image or per token
    flat_targets = targets.reshape(-1).to(hidden.device)  # (total,)
    step = max(1, CHUNK_ELEMENTS // width)
    parts = []
    for start in range(0, total, step):
        part = rows[start : start + step] if image else rows[:, start : start + step]
        logits = family.readout(model, part).reshape(-1, width)  # (n, V)
        parts.append(_scores(logits, flat_targets[start : start + logits.shape[0]], k))
    return [torch.cat(column).reshape(*targets.shape, *column[0].shape[1:]).cpu().numpy() for column in zip(*parts)]


def output_width(family: Family, model: nn.Module) -> int:
    """The output width of the readout: the vocabulary or the classes (the output layer's out_features)."""
    head = family.output_module(model)
    if head is None or not hasattr(head, "out_features"):
        raise NoReadoutError(f"{family.description}: the output layer {family.output_layer!r} is not a linear layer")
    width: Any = head.out_features
    return int(width)


def _texts(tokenizer: Any, ids: Sequence[int], family: Family, model: nn.Module) -> dict[int, str]:
    if family.task == "image-classification":
        id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
        return {i: str(id2label.get(i, i)) for i in ids}
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        return {}
    return {i: tokenizer.decode([i]) for i in ids}


@torch.no_grad()
def logit_lens(
    model: "Parent | nn.Module",
    family: Family | None = None,
    batch: Mapping[str, torch.Tensor] | None = None,
    top_k: int = 5,
    *,
    plan: "SubclonePlan | Mapping[str, Any] | None" = None,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    name: str | None = None,
    tokenizer: Any = None,
) -> LogitLens:
    """Read every residual layer of ``model`` through its final norm and head, on one batch.

    Args:
        model: a Parent, a destination from :func:`~subclone_viz.subclone` or any supported model.
        family: its adapter (None: found from the model).
        batch: input_ids/attention_mask (text) or pixel_values (and labels) as the data module yields.
        top_k: how many predictions to keep per token and layer.
        plan: the plan a destination was cut by, when it does not carry one (labels its layers by parent block).
        layers: residual layers to read (0 = embedding .. L = last block); default every one.
        positions: token positions to read (negative ones count from the end); default every one. The head runs
            at these positions only, so one position costs about one forward without the head; the loss and
            accuracy then cover these positions only.
        name: display name; tokenizer: decodes ids (default: the model's).
    """
    if batch is None and isinstance(family, Mapping):  # logit_lens(parent, batch)
        batch, family = family, None
    item = subject(model, family, plan, name, tokenizer)
    if batch is None:
        raise ValueError("no batch given: pass the batch to read (input_ids or pixel_values)")
    module, family = item.module, item.family
    check_readable(family, module, item.name)
    check_batch(family, batch, item.name)
    width = output_width(family, module)
    if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= width:
        raise ValueError(f"top_k={top_k!r} must be a whole number from 1 to {width} (the output width)")
    count = len(item.sources)
    chosen = list(range(count)) if layers is None else [int(i) for i in layers]
    if not chosen or any(not -count <= i < count for i in chosen):
        raise ValueError(f"layers={layers!r}: residual layers run from 0 (embedding) to {count - 1}")
    chosen = [i % count for i in chosen]
    targets = lens_targets(family, batch)  # (B, T)
    columns = _chosen_positions(positions, targets.shape[1])
    if columns is not None:
        targets = targets[:, columns]  # (B, P)
    was_training = module.training
    module.eval()
    try:
        device_batch = to_device(dict(batch), next(module.parameters()).device)
        with record_stream(family, module) as stream:
            forward_before(lambda: family.logits(module, device_batch), family.output_module(module))
        states = [stream.states[i] for i in chosen]
        if any(state is None for state in states):
            raise RuntimeError(f"a hook never fired: {item.name}'s forward skipped a block")
        if columns is not None and family.task != "image-classification":
            # Few rows per layer: one readout over every layer's rows reads the head's weights once, not per layer.
            stacked = torch.stack([state[:, columns] for state in states if state is not None])  # (layers, B, P, d)
            together = _layer_readings(
                family, module, stacked, targets.expand(len(states), *targets.shape), int(top_k), width
            )
            readings = [[column[n] for column in together] for n in range(len(states))]
        else:
            readings = [
                _layer_readings(family, module, state, targets, int(top_k), width)
                for state in states
                if state is not None
            ]
    finally:
        module.train(was_training)
    top_ids, top_probs, ranks, probs = (np.stack([r[n] for r in readings]) for n in range(4))
    ids = sorted(set(np.unique(top_ids).tolist()) | set(targets[targets >= 0].unique().tolist()))
    text_tokenizer = item.tokenizer if family.task != "image-classification" else None
    tokens = None
    if text_tokenizer is not None and hasattr(text_tokenizer, "decode"):
        tokens = [[text_tokenizer.decode([int(i)]) for i in row] for row in batch["input_ids"].tolist()]
    return LogitLens(
        model=item.name,
        task=family.task,
        labels=[item.labels[i] for i in chosen],
        sources=[item.sources[i] for i in chosen],
        tokens=tokens,
        targets=targets.numpy(),
        top_ids=top_ids,
        top_probs=top_probs,
        target_rank=ranks,
        target_prob=probs,
        id_texts=_texts(text_tokenizer, ids, family, module),
        positions=columns,
    )


def _chosen_positions(positions: Sequence[int] | None, length: int) -> list[int] | None:
    """``positions`` as distinct indices into a sequence of ``length`` (None: every position); a clear error
    before any forward for one outside it."""
    if positions is None:
        return None
    chosen = [int(p) for p in positions]
    if not chosen or any(not -length <= p < length for p in chosen):
        raise ValueError(f"positions={list(positions)!r}: the batch's positions run from 0 to {length - 1}")
    chosen = [p % length for p in chosen]
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"positions={list(positions)!r} names a position twice")
    return chosen


def through_depth(
    parent: LogitLens, destination: LogitLens | None, sequence: int = 0, position: int = 0
) -> list[dict[str, Any]]:
    """Rows for a "predictions through depth" view: per parent residual layer, its top-k (text, probability)
    and the destination's at the layer that came from it, or None where the plan removed the block.

    A destination layer that repeats a parent block (a grown destination) shows its last copy.
    """
    every = parent.positions is None and (destination is None or destination.positions is None)
    shape = slice(1, 3) if every else slice(1, 2)  # lenses of chosen positions are matched position by position
    if destination is not None and destination.top_ids.shape[shape] != parent.top_ids.shape[shape]:
        raise ValueError("the two lenses were not read on the same batch: their (sequences, positions) differ")
    length = parent.top_ids.shape[2] if parent.positions is None else max(parent.positions) + 1
    if not 0 <= sequence < parent.top_ids.shape[1] or not 0 <= position < length:
        raise ValueError(
            f"(sequence, position) = ({sequence}, {position}) is outside the batch {parent.top_ids.shape[1:3]}"
        )
    column = parent.column(position)
    other_column = None if destination is None else destination.column(position)  # checked before any row
    by_source: dict[Any, int] = {}
    if destination is not None:
        for j, source in enumerate(destination.sources):
            by_source[source] = j
    other = destination
    rows = []
    for i, (label, source) in enumerate(zip(parent.labels, parent.sources)):
        match = by_source.get(source)
        row: dict[str, Any] = {
            "layer": label,
            "source": source,
            "parent": parent.predictions(i, sequence, position),
            "parent_rank": int(parent.target_rank[i, sequence, column]),
            "destination": None,
            "destination_rank": None,
            "destination_layer": None,
        }
        if match is not None and other is not None and other_column is not None:
            row.update(
                destination=other.predictions(match, sequence, position),
                destination_rank=int(other.target_rank[match, sequence, other_column]),
                destination_layer=other.labels[match],
            )
        rows.append(row)
    return rows
