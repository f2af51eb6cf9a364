"""A grid of destination sizes: parameters, compute, measured latency and memory, and held-out loss before training.

Which destination to subclone is a trade-off between size and how much of the parent survives. For every
cell of a (layers x hidden) grid, :func:`size_grid` plans and subclones that destination (with the chosen
depth, width and scaling strategies) and records:

* ``params``: the destination's parameter count (tied weights counted once);
* ``flops_per_token``: forward FLOPs per token,
  ``2 * M + 4 * layers * seq_len * heads * head_dim``, where M is the number of weights in every matrix
  multiply a token goes through (every linear layer of the blocks and the output head; the embeddings, a
  ViT's patch projection included, the norms and the biases are left out). 2 FLOPs per multiply-add; the
  attention term counts the query-key scores and the weighted sum of values, each a (heads * head_dim)-long
  dot product with each of ``seq_len`` positions (Hoffmann et al. 2022, appendix F; a causal kernel that
  skips masked positions does about half of it). Linear layers that see one vector per sequence (a pooler,
  a classifier on the cls token) are counted as if they ran on every token;
* ``loss``: the subclone's mean held-out loss on ``eval_batches``, before training. Cells of one width share
  their leading blocks (with ``depth="middle"`` the first half of them): a cell resumes each batch from the
  hidden state the previous cell of its width computed after the shared blocks, and runs only the rest
  (the numbers are those of a whole forward, bit for bit);
* ``latency``: measured seconds per token (per image for image classifiers) of a forward over the first
  eval batch on the parent's device, the median of ``LATENCY_REPEATS`` runs after a first one, with
  ``latency_spread``, half their interquartile range: on a busy machine two cells closer than their spreads
  are not told apart;
* ``memory``: measured peak bytes of that forward: the weights and buffers plus what the forward allocates
  (on CUDA the allocator's peak; on the CPU the tensors alive at once, followed op by op).

A mixture-of-experts parent adds a third axis, the routed experts kept per layer (``experts=[2, 4, 8]``). A
grid has two axes, so that it reads as one heat map: with several expert counts it is layers x experts at one
width (the parent's unless ``hidden`` names one), or hidden x experts when ``layers`` holds one value; one
expert count holds a layers x hidden grid at it. Every cell also records:

* ``active_params``: the parameters one token uses, the routed experts at ``experts_per_tok`` of the experts
  kept, plus the shared experts, attention, routers and embeddings, counted as ``params`` counts them (a dense
  cell's are its ``params``). Its FLOPs per token count the same experts: M above holds the routers' weights
  and ``experts_per_tok`` of the experts' matrices.

``SizeGrid.pareto_front(cost)`` marks the cells that no other cell beats on both that cost and the loss:
the sizes worth choosing between. For the measured latency a cell beats another only when it is faster by
more than the two spreads together: a difference within the noise ranks neither.

A cell whose spec the parent cannot give (a width that is not a multiple of the head size, depth growth with
a strategy other than "middle"...) is NaN, with the reason in ``reasons``. Each computed cell is cached as
``cache_dir()/size_grid/<key>.json``, keyed on the parent's fingerprint, the profile (source, tokens and a
digest of its sums), the spec, the strategies, ``seq_len``, the evaluation batches (description and a
digest of their contents) and the device (with the CPU's thread count), so re-running a grid, or a grid
that shares cells with an earlier one, is instant; its latencies are those measured when the cell was made.
Under several processes every cell's evaluation is sharded over them, the main process measures latency and
memory and keeps the cache.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=1)
    >>> prof = sv.profile(parent, heldout, progress=False)
    >>> sv.default_grid_axes(parent)                  # the full grid; this example computes a corner of it
    ([6, 10, 15, 20, 25, 30], [192, 288, 384, 480, 576])
    >>> grid = sv.size_grid(parent, prof, [15, 30], [384, 576], heldout, progress=False)
    >>> grid.loss.shape                               # held-out loss of each subclone, untrained
    (2, 2)
    >>> grid.spec(0, 0)
    DestinationSpec(layers=15, hidden=384, ffn=None, heads=None, kv_heads=None)
    >>> grid.pareto_front("latency").shape            # True where no cell is both faster and better
    (2, 2)
    >>> from subclone_viz.families import FAMILIES    # a tiny mixture of experts: 6 experts, top-2
    >>> moe = sv.load_parent(FAMILIES["mixtral"].tiny_models()["mixtral"](), device="cpu")
    >>> import torch
    >>> batches = [{"input_ids": torch.randint(0, 97, (2, 12))}]
    >>> moe_grid = sv.size_grid(moe, sv.profile(moe, batches, progress=False), [2, 4], None, batches,
    ...                         experts=[2, 6], progress=False)
    >>> moe_grid.axes, moe_grid.spec(0, 1)
    (['layers', 'experts'], DestinationSpec(layers=2, hidden=32, ffn=None, heads=None, kv_heads=None, experts=6))
    >>> (moe_grid.active_params < moe_grid.params).tolist()   # a token reaches 2 of the 2 or 6 experts kept
    [[False, True], [False, True]]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from . import distributed
from ._atomic import DamagedFileError, note_rebuild, read_cache_file, write_cache_file
from ._version import __version__
from .capture import (
    ResidualStream,
    forward_peak_bytes,
    record_stream,
    resumed,
    to_device,
    tokens_per_sequence,
)
from .data import cache_dir
from .experts import active_matmul_weights, parameter_counts
from .families import Family
from .parent import parent_fingerprint
from .plan import (
    DEPTH_STRATEGIES,
    DEPTHS,
    SCALINGS,
    WIDTH_STRATEGIES,
    WIDTHS,
    DestinationSpec,
    SpecError,
    plan,
    spec_choices,
)
from .readers import register_reader
from .records import Record, register_record
from .settings import PlanStrategy
from .subclone import subclone

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import SubclonePlan
    from .profile import Profile

# What a cell costs, each a reason to prefer a smaller one; the loss is what it keeps of the parent.
COSTS = ("params", "flops_per_token", "latency", "memory")
QUANTITIES = ("loss", *COSTS)
# The parameters one token goes through: a mixture of experts' routed experts count experts_per_tok / experts of
# their size (a dense cell's are all of its parameters). A cost of every grid, kept out of COSTS so that views
# with one panel per cost keep their layout for dense parents.
ACTIVE_PARAMS = "active_params"
GRID_COSTS = (*COSTS, ACTIVE_PARAMS)
# What a grid can vary; a grid varies two of them and holds the third at one value.
AXES = ("layers", "hidden", "experts")
# Fractions of the parent's depth and width that the default grid axes sample.
_DEPTH_FRACTIONS = (1 / 5, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 1)
_WIDTH_FRACTIONS = (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1)
# Forwards timed per cell, after one that measures memory: the median counts, the interquartile range says how
# much a busy machine moved it. Seven keep a cell's latency under a second for the default grids on a laptop.
LATENCY_REPEATS = 7


@register_record
@dataclass
class SizeGrid(Record):
    """Per (layers[i], hidden[j]) destination: parameters, forward FLOPs per token, untrained held-out loss, and
    the measured forward latency per token and peak memory on ``device``. Saved with ``save``, read back checked
    with ``load``.

    A mixture-of-experts grid may vary the experts kept per layer instead of one of the other two: ``axes`` names
    the row and column axes (``("layers", "hidden")`` by default, or ``("layers", "experts")``,
    ``("hidden", "experts")``), the third holds one value, and every (rows, columns) array follows ``axes``."""

    FORMAT = "subclone_viz.size_grid"
    VERSION = 2
    READS = (0, 1)  # 0: grids written as to_dict() before records were versioned; 1: before the experts axis

    parent: str
    layers: list[int]
    hidden: list[int]
    params: np.ndarray  # (len(layers), len(hidden)), NaN where the spec is invalid
    flops_per_token: np.ndarray  # (len(layers), len(hidden))
    loss: np.ndarray  # (len(layers), len(hidden)), nats per token (per image for classifiers)
    reasons: list[list[str | None]]  # why a cell is NaN; None for computed cells
    dims: list[list[dict[str, int] | None]]  # each cell's resolved destination dims
    depth: str
    width: str
    scaling: str
    seq_len: int
    eval_source: str
    latency: np.ndarray | None = None  # (len(layers), len(hidden)), seconds per token (per image); NaN: not measured
    memory: np.ndarray | None = None  # (len(layers), len(hidden)), peak bytes of weights and one batch's forward
    device: str = ""  # where latency and memory were measured
    cache_hits: int = 0
    latency_spread: np.ndarray | None = None  # (len(layers), len(hidden)), half the interquartile range of latency
    extra: dict[str, Any] = field(default_factory=dict)
    active_params: np.ndarray | None = None  # parameters per token (MoE: top-k of the experts kept); None: params
    experts: list[int] = field(default_factory=list)  # routed experts kept per layer; empty: the parent's (dense)
    axes: list[str] = field(default_factory=lambda: ["layers", "hidden"])  # the (row, column) axes

    def __post_init__(self) -> None:
        for name in ("latency", "memory", "latency_spread"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(self.shape, np.nan))
        if self.active_params is None:  # grids written before active parameters were counted: dense ones
            self.active_params = np.array(self.params, dtype=float)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.axis_values(0)), len(self.axis_values(1))

    def axis_values(self, axis: int) -> list[int]:
        """The values of the rows (``axis=0``) or the columns (``axis=1``): block counts, widths or experts."""
        return getattr(self, self.axes[axis])

    def spec(self, i: int, j: int) -> DestinationSpec:
        """The destination spec of cell (i, j): row ``i`` and column ``j`` of ``axes``, the third axis's value."""
        rows, cols = self.shape
        if not (0 <= i < rows and 0 <= j < cols):
            raise IndexError(f"cell ({i}, {j}) is outside the {rows} x {cols} grid")
        values: dict[str, Any] = {"layers": self.layers[0], "hidden": self.hidden[0], "experts": None}
        values["experts"] = self.experts[0] if self.experts else None
        values[self.axes[0]], values[self.axes[1]] = self.axis_values(0)[i], self.axis_values(1)[j]
        return DestinationSpec(**values)

    def cell_of(self, dims: dict[str, int]) -> tuple[int, int] | None:
        """The cell (i, j) of a destination's resolved ``dims`` (a plan's), or None when the grid has none of
        its block count, width and, for a grid of expert counts, experts kept."""
        names = [n for n in AXES if n != "experts" or self.experts]
        for i in range(self.shape[0]):
            for j in range(self.shape[1]):
                spec = self.spec(i, j)
                if all(getattr(spec, n) == dims.get(n) for n in names):
                    return i, j
        return None

    def label(self, i: int, j: int) -> str:
        """Cell (i, j) as a person reads it: ``blocks x width``, and the experts kept where the grid names them."""
        spec = self.spec(i, j)
        return f"{spec.layers} x {spec.hidden}" + (f", {spec.experts} experts" if spec.experts is not None else "")

    def quantity(self, name: str) -> np.ndarray:
        """One of ``QUANTITIES`` (or ``"active_params"``) as an array."""
        if name not in (*QUANTITIES, ACTIVE_PARAMS):
            raise ValueError(
                f"quantity={name!r} is not a grid quantity: choose one of {', '.join((*QUANTITIES, ACTIVE_PARAMS))}"
            )
        return getattr(self, name)

    def spread(self, cost: str) -> np.ndarray:
        """How far a measured ``cost`` may move between runs (latency: half the interquartile range of its
        repeats; 0 for the exact costs and for latencies cached before repeats were kept)."""
        if cost == "latency":
            return np.nan_to_num(self.latency_spread, nan=0.0)
        return np.zeros(self.shape)

    def pareto_front(self, cost: str = "latency") -> np.ndarray:
        """(len(layers), len(hidden)) bool: the cells that no other cell beats on both ``cost`` and loss (no
        other is at most as costly and at most as lossy, and better on one). A measured cost ranks two cells
        only when they differ by more than their two spreads (:meth:`spread`): within the noise, neither beats
        the other. Cells without both are never on it."""
        if cost not in GRID_COSTS:
            raise ValueError(f"cost={cost!r} is not a cost of the grid: choose one of {', '.join(GRID_COSTS)}")
        costs, losses, spreads = self.quantity(cost).ravel(), self.loss.ravel(), self.spread(cost).ravel()
        valid = np.isfinite(costs) & np.isfinite(losses)
        front = np.zeros_like(valid)
        for k in np.flatnonzero(valid):
            noise = spreads + spreads[k]
            cheaper = costs < costs[k] - noise  # by more than the noise
            equal = (costs == costs[k]) & (noise == 0)  # exactly as costly: then the loss decides
            beats = valid & (losses <= losses[k]) & (cheaper | (equal & (losses < losses[k])))
            front[k] = not np.any(beats)
        return front.reshape(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become nested lists with None for NaN."""

        def plain(array: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in array]

        return {
            "parent": self.parent,
            "layers": list(self.layers),
            "hidden": list(self.hidden),
            "params": plain(self.params),
            "active_params": plain(self.quantity(ACTIVE_PARAMS)),
            "flops_per_token": plain(self.flops_per_token),
            "loss": plain(self.loss),
            "latency": plain(self.latency),
            "memory": plain(self.memory),
            "latency_spread": plain(self.latency_spread),
            "device": self.device,
            "reasons": self.reasons,
            "dims": self.dims,
            "depth": self.depth,
            "width": self.width,
            "scaling": self.scaling,
            "seq_len": self.seq_len,
            "eval_source": self.eval_source,
            "cache_hits": self.cache_hits,
            "extra": self.extra,
            "experts": list(self.experts),
            "axes": list(self.axes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SizeGrid":
        """A grid from :meth:`to_dict`'s data, checked: every field there, every array and per-cell list of the
        grid's shape. Grids written before latency and memory were measured lack them (NaN)."""
        data = {key: value for key, value in data.items() if key not in ("format", "version")}
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
        if missing or unknown:
            raise ValueError(f"not a size grid: missing {missing}, unknown {unknown}")
        shape = _checked_axes(data)
        for name in (*QUANTITIES, "latency_spread", ACTIVE_PARAMS):  # older grids lack the spread, active params
            if name in data:
                data[name] = _grid_array(name, data[name], shape)
        for name in ("reasons", "dims"):
            if not isinstance(data[name], list) or [len(row) for row in data[name]] != [shape[1]] * shape[0]:
                raise ValueError(f"{name!r} must be {shape[0]} rows of {shape[1]} cells")
        return cls(**data)


def _checked_axes(data: dict[str, Any]) -> tuple[int, int]:
    """The grid's shape from a size grid's data, whose axes are checked: two distinct names of ``AXES``, each a
    non-empty list of whole numbers, and one value on the axis the grid holds fixed (none for a grid of the
    parent's experts)."""
    axes = data.setdefault("axes", ["layers", "hidden"])
    data.setdefault("experts", [])
    if not (isinstance(axes, list) and len(axes) == 2 and axes[0] != axes[1] and set(axes) <= set(AXES)):
        raise ValueError(f"'axes' must name two of {', '.join(AXES)}; got {axes!r}")
    for name in AXES:
        values = data[name]
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name!r} must be a list of whole numbers; got {values!r}")
        fixed = name not in axes
        if (not values and (name != "experts" or not fixed)) or (fixed and len(values) > 1):
            raise ValueError(f"{name!r} must hold {'at most one value' if fixed else 'values'}; got {values!r}")
    return len(data[axes[0]]), len(data[axes[1]])


def _grid_array(name: str, rows: Any, shape: tuple[int, int]) -> np.ndarray:
    """A grid quantity from nested lists with None for NaN, of ``shape``."""
    try:
        array = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name!r} is not a grid of numbers ({error})") from error
    if array.shape != shape:
        raise ValueError(f"{name!r} has shape {array.shape}, the grid is {shape[0]} x {shape[1]}")
    return array


def default_grid_axes(parent: "Parent") -> tuple[list[int], list[int]]:
    """Layer counts and widths that span the parent: about 1/5 to all of its depth, 1/3 to all of its width.

    Widths are snapped to values the family accepts (multiples of the head size where heads follow the width).
    SmolLM2-135M (30 x 576) gives layers [6, 10, 15, 20, 25, 30] and hidden [192, 288, 384, 480, 576].
    """
    dims = parent.dims
    layers = sorted({max(1, round(dims.layers * f)) for f in _DEPTH_FRACTIONS})
    valid = np.array(spec_choices(parent)["hidden"])
    hidden = sorted({int(valid[np.abs(valid - dims.hidden * f).argmin()]) for f in _WIDTH_FRACTIONS})
    return layers, hidden


def matmul_weights(model: nn.Module) -> int:
    """Weights of every linear layer (a tied output head counted again: it is a matmul of its own)."""
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, Conv1D)))


def flops_per_token(
    model: nn.Module, layers: int, heads: int, head_dim: int, seq_len: int, family: Family | None = None
) -> int:
    """Forward FLOPs per token: ``2 * matmul weights + 4 * layers * seq_len * heads * head_dim``. With the
    model's ``family``, a mixture of experts counts the weights one token uses: its routed experts at
    ``experts_per_tok / experts`` (:func:`~subclone_viz.experts.active_matmul_weights`)."""
    weights = matmul_weights(model) if family is None else active_matmul_weights(model, family)
    return 2 * weights + 4 * layers * seq_len * heads * head_dim


def json_ready(value: Any) -> Any:
    """``value`` as it reads back from JSON, so that a cached key compares equal to a fresh one."""
    return json.loads(json.dumps(value, default=str))


def cache_digest(value: Any) -> str:
    """A short, stable hash of JSON-ready ``value``: the name of a cached result (size-grid cells, budget pilots)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def batches_digest(batches: Sequence[dict[str, torch.Tensor]]) -> str:
    """A hash of the batches' contents, so that a cached result is only reused on the same data."""
    hasher = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            if isinstance(value, torch.Tensor):
                hasher.update(key.encode())
                hasher.update(str(tuple(value.shape)).encode())
                hasher.update(value.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:24]


def profile_key(profile: "Profile | None") -> dict[str, Any] | None:
    """What identifies a profile in a cache key (its source, token count and a digest of its sums)."""
    if profile is None:
        return None
    hasher = hashlib.sha256()
    for array in (profile.block_sums, profile.residual_abs_sums, profile.ffn_abs_sums, profile.attn_abs_sums):
        hasher.update(np.ascontiguousarray(array).tobytes())
    return {"source": profile.source, "tokens": profile.tokens, "sums": hasher.hexdigest()[:24]}


def read_grid_cell(path: str | os.PathLike) -> dict[str, Any] | None:
    """A cell's cached record, or None when there is none; a damaged one raises
    :class:`~subclone_viz._atomic.DamagedFileError` naming it."""
    path = Path(path)
    payload = read_cache_file(path)
    if payload is None:
        return None
    try:
        record = json.loads(payload)
    except ValueError as error:
        raise DamagedFileError(f"{path} is not a size-grid cell record ({error})") from error
    if not isinstance(record, dict) or any(name not in record for name in ("key", "dims", *QUANTITIES)):
        raise DamagedFileError(f"{path} is not a size-grid cell record")
    return record


def _read_cache(path: Path) -> dict[str, Any] | None:
    """A cell's cached record, or None when there is none or it is damaged (said in one warning line)."""
    try:
        return read_grid_cell(path)
    except DamagedFileError as error:
        note_rebuild("size-grid cell", str(error))
        return None


class _WidthPrefix:
    """The hidden states of the last cell measured at one width (one stream per eval batch), which the next
    cell of that width resumes from after the blocks the two share."""

    def __init__(self) -> None:
        self.plan: "SubclonePlan | None" = None
        self.streams: list[ResidualStream] = []


def _shared_blocks(a: "SubclonePlan", b: "SubclonePlan") -> int:
    """How many leading destination blocks hold the same weights in the subclones of plans ``a`` and ``b``:
    the same source blocks, kept channels, neurons and heads, and a scaling that depends on shapes only."""
    widths_a, widths_b = ({k: v for k, v in p.dims.items() if k != "layers"} for p in (a, b))
    if widths_a != widths_b or a.residual != b.residual or a.scaling != b.scaling or a.scaling == "calibrated":
        return 0
    shared = 0
    experts_a, experts_b = (p.experts or [None] * len(p.layers) for p in (a, b))  # dense plans keep no experts
    for block_a, block_b in zip(
        zip(a.layers, a.ffn, a.heads, a.kv_heads, experts_a), zip(b.layers, b.ffn, b.heads, b.kv_heads, experts_b)
    ):
        if block_a != block_b:
            break
        shared += 1
    return shared


@torch.no_grad()
def _cell_loss(
    family: Family, model: nn.Module, cell_plan: "SubclonePlan", batches: list, prefix: _WidthPrefix
) -> float:
    """The cell's mean held-out loss, as :func:`~subclone_viz.evaluate` computes it, running on each batch only
    the blocks after those it shares with the previous cell of its width (same weights, same inputs: the same
    hidden states, bit for bit). Leaves this cell's hidden states in ``prefix`` for the next cell. Under several
    processes each takes its share of the batches (the same share for every cell) and the sums are added."""
    depth = len(cell_plan.layers)
    shared = 0 if prefix.plan is None else _shared_blocks(prefix.plan, cell_plan)
    blocks = list(family.blocks(model))
    device = next(model.parameters()).device
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)  # (sum of batch losses, batches), added as evaluate() adds
    streams = []
    for index, batch in enumerate(distributed.shard(batches)):
        batch = to_device(batch, device)
        with record_stream(family, model) as stream:
            if shared == 0:
                loss = float(family.loss(model, batch))
            else:
                previous = prefix.streams[index]
                # Resume at its first block of its own; a cell that is all shared only runs the head.
                start, run = (shared, blocks[shared:]) if shared < depth else (depth - 1, [None])
                with resumed(family, model, start, previous.states[shared], run, previous.output_like):
                    loss = float(family.loss(model, batch))
                for position in range(shared + 1):
                    stream.states[position] = previous.states[position]
                stream.output_like = previous.output_like
        totals += torch.tensor([loss, 1], dtype=torch.float64)
        streams.append(stream)
    prefix.plan, prefix.streams = cell_plan, streams
    loss_sum, count = distributed.reduce_sum(totals).tolist()
    return loss_sum / count  # each batch weighted equally


def device_name(device: torch.device) -> str:
    """The device that latency and memory are measured on, as a person would name it (and the CPU threads)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"{platform.processor() or platform.machine()} (cpu, {torch.get_num_threads()} threads)"


@torch.no_grad()
def _latency_and_memory(family: Family, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    """(seconds per token (per image for images) of a forward over ``batch``, the median of ``LATENCY_REPEATS``;
    half their interquartile range; peak bytes), after a first run that measures the peak memory: the weights
    and buffers plus what the forward allocates."""
    device = next(model.parameters()).device
    batch = to_device(batch, device)
    units = batch["input_ids"].numel() if "input_ids" in batch else batch["pixel_values"].shape[0]
    weights = sum(t.nbytes for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
    peak = forward_peak_bytes(lambda: family.logits(model, batch), device)
    seconds = []
    for _ in range(LATENCY_REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        family.logits(model, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    low, median, high = np.percentile(seconds, [25, 50, 75])
    return median / units, (high - low) / 2 / units, float(weights + peak)


def _measure_cell(
    parent: "Parent", destination_plan: "SubclonePlan", batches: list, seq_len: int, prefix: _WidthPrefix
) -> dict[str, Any]:
    calibration = batches if destination_plan.scaling == "calibrated" else None
    model = subclone(parent, destination_plan, calibration_batches=calibration)
    dims = destination_plan.destination_dims
    # One process measures, so that every process records the same figures.
    latency, spread, memory = distributed.on_main(_latency_and_memory, parent.family, model, batches[0])
    counts = parameter_counts(model, parent.family)
    return {
        "params": counts["total"],
        ACTIVE_PARAMS: counts["active"],
        "flops_per_token": flops_per_token(model, dims.layers, dims.heads, dims.head_dim, seq_len, parent.family),
        "latency": latency,
        "latency_spread": spread,
        "memory": memory,
        # A bare encoder (BertModel) has no loss to score; its size and compute still count.
        "loss": (
            _cell_loss(parent.family, model, destination_plan, batches, prefix)
            if parent.family.task != "encoder"
            else float("nan")
        ),
        "dims": dims.to_dict(),
    }


def size_grid(
    parent: "Parent",
    profile: "Profile | None",
    layers: Sequence[int] | None = None,
    hidden: Sequence[int] | None = None,
    eval_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    depth: str = PlanStrategy().depth,
    width: str = PlanStrategy().width,
    scaling: str = PlanStrategy().scaling,
    seq_len: int | None = None,
    cache: bool = True,
    progress: bool = True,
    experts: Sequence[int] | None = None,
) -> SizeGrid:
    """Parameters, FLOPs per token and untrained held-out loss of every (layers x hidden) subclone.

    Args:
        parent: the loaded parent.
        profile: its profile (needed by ``width="importance"`` and ``depth="metric"``).
        layers: destination block counts (default: :func:`default_grid_axes`).
        hidden: destination widths (default: :func:`default_grid_axes`).
        eval_batches: held-out batches the loss is measured on (2 to 4 small batches are plenty).
        depth, width, scaling: the plan strategies (see :func:`~subclone_viz.plan`); ``scaling="calibrated"``
            calibrates on ``eval_batches``.
        seq_len: the context length of the attention term of the FLOPs (default: the batches' own length).
        cache: read and write each cell's result under ``cache_dir()/size_grid``.
        progress: show a progress bar on stderr.
        experts: mixtures of experts only: the routed experts kept per layer. One value holds every cell at it;
            several make the grid's columns, and then ``hidden`` (default: the parent's width), or else
            ``layers``, must hold one value: the grid is layers x experts (or hidden x experts).
    """
    values, axes = _grid_axes(parent, layers, hidden, experts)
    batches = _checked_grid(parent, profile, eval_batches, depth, width, scaling)
    if seq_len is None:
        seq_len = tokens_per_sequence(parent.family, parent.model, batches[0], parent.input_device)
    device = device_name(parent.input_device)
    strategies = dict(depth=depth, width=width, scaling=scaling)
    count = len(batches)
    eval_source = getattr(eval_batches, "description", f"{count} held-out batch{'es' if count > 1 else ''}")
    common_key = json_ready(
        {
            "parent": parent_fingerprint(parent),
            "profile": profile_key(profile),
            "strategies": strategies,
            "seq_len": seq_len,
            "eval": {"description": eval_source, "contents": batches_digest(batches)},
            "device": device,
            "latency_repeats": LATENCY_REPEATS,  # cells cached with fewer timed runs have no spread: measure again
            "version": __version__,
        }
    )
    rows, cols = len(values[axes[0]]), len(values[axes[1]])
    grid = SizeGrid(
        parent=parent.name,
        layers=values["layers"],
        hidden=values["hidden"],
        experts=values["experts"],
        axes=axes,
        params=np.full((rows, cols), np.nan),
        flops_per_token=np.full((rows, cols), np.nan),
        loss=np.full((rows, cols), np.nan),
        reasons=[[None] * cols for _ in range(rows)],
        dims=[[None] * cols for _ in range(rows)],
        depth=depth,
        width=width,
        scaling=scaling,
        seq_len=seq_len,
        eval_source=eval_source,
        device=device,
    )
    _fill_cells(grid, parent, profile, common_key, batches, cache, progress)
    return grid


def _fill_cells(
    grid: SizeGrid,
    parent: "Parent",
    profile: "Profile | None",
    common_key: dict[str, Any],
    batches: list,
    cache: bool,
    progress: bool,
) -> None:
    """Plan, subclone and measure every cell of ``grid`` (or read it from the cache), filling its arrays."""
    from tqdm.auto import tqdm

    rows, cols = grid.shape
    strategies = dict(depth=grid.depth, width=grid.width, scaling=grid.scaling)
    prefix, prefix_column = _WidthPrefix(), None  # the hidden states of the last measured cell of one column
    # Column by column: the cells of one width (and one expert count) share leading blocks, and only one
    # column's states are held.
    cells = [(i, j) for j in range(cols) for i in range(rows)]
    bar_off = not distributed.show_progress(progress)
    for i, j in tqdm(cells, desc="size grid", disable=bar_off, leave=False, file=sys.stderr):
        spec = grid.spec(i, j)
        try:
            destination_plan = plan(parent, profile, spec, **strategies)
        except SpecError as error:
            grid.reasons[i][j] = str(error)
            continue
        if prefix_column != j:
            prefix, prefix_column = _WidthPrefix(), j
        key = {**common_key, "spec": _spec_key(parent, spec)}
        record, hit = _cell_record(parent, destination_plan, key, batches, grid.seq_len, prefix, cache)
        grid.cache_hits += hit
        for name in (*QUANTITIES, "latency_spread", ACTIVE_PARAMS):
            getattr(grid, name)[i, j] = record.get(name, record["params"])  # older cells: dense, all active
        grid.dims[i][j] = record["dims"]


def _spec_key(parent: "Parent", spec: DestinationSpec) -> dict[str, int]:
    """What names a cell's spec in its cache key; a mixture of experts' cells add the experts kept (so that its
    cells cached before FLOPs counted the active experts are measured again)."""
    key = {"layers": cast(int, spec.layers), "hidden": int(spec.hidden)}
    if parent.dims.experts:
        key["experts"] = int(parent.dims.experts if spec.experts is None else spec.experts)
    return key


def _grid_axes(
    parent: "Parent", layers: Sequence[int] | None, hidden: Sequence[int] | None, experts: Sequence[int] | None
) -> tuple[dict[str, list[int]], list[str]]:
    """The values of every axis and the grid's (row, column) axes, checked before any cell is measured."""
    default_layers, default_hidden = default_grid_axes(parent)
    if experts is not None:
        valid = spec_choices(parent).get("experts")
        if not valid:
            raise SpecError(f"experts={list(experts)!r}: {parent.name} is dense, it has no experts to keep")
        wrong = [e for e in experts if not isinstance(e, (int, np.integer)) or e not in valid]
        if wrong or not experts:
            raise SpecError(f"experts={list(experts)!r}: each must be one of {valid} (the counts its router routes)")
        default_hidden = [parent.dims.hidden]  # a grid over the experts keeps one width unless told otherwise
    values = {
        "layers": list(default_layers if layers is None else layers),
        "hidden": list(default_hidden if hidden is None else hidden),
        "experts": [int(e) for e in experts or []],
    }
    if not values["layers"] or not values["hidden"]:
        raise ValueError(
            f"the grid needs at least one layer count and one width; got layers={values['layers']}, "
            f"hidden={values['hidden']}"
        )
    return values, ["layers", "hidden"] if experts is None else _experts_axes(values)


def _experts_axes(values: dict[str, list[int]]) -> list[str]:
    """The axes of a grid given expert counts: several make the columns, beside whichever of layers and hidden
    varies (layers when neither does); one holds the cells at it."""
    if len(values["experts"]) == 1:
        return ["layers", "hidden"]
    if len(values["hidden"]) <= 1:
        return ["layers", "experts"]
    if len(values["layers"]) == 1:
        return ["hidden", "experts"]
    raise SpecError(
        f"a size grid has two axes: with experts={list(values['experts'])} give one value for hidden (a layers x "
        f"experts grid) or for layers (hidden x experts); got layers={list(values['layers'])}, "
        f"hidden={list(values['hidden'])}"
    )


def _checked_grid(
    parent: "Parent",
    profile: "Profile | None",
    eval_batches: Iterable[dict[str, torch.Tensor]] | None,
    depth: str,
    width: str,
    scaling: str,
) -> list[dict[str, torch.Tensor]]:
    """The grid's held-out batches; the caller's mistakes are refused before any cell is measured (and marked
    invalid for them)."""
    for name, value, choices in (
        ("depth", depth, DEPTH_STRATEGIES),
        ("width", width, WIDTH_STRATEGIES),
        ("scaling", scaling, SCALINGS),
    ):
        if not isinstance(value, str) or value not in choices:
            raise SpecError(f"{name}={value!r} is not valid for a size grid: choose one of {', '.join(choices)}")
    if profile is None and (WIDTHS[width].needs_profile or DEPTHS[depth].needs_profile):
        raise SpecError(f"width={width!r} and depth={depth!r} need a profile: pass sv.profile(parent, batches)")
    batches = list(eval_batches or [])
    if not batches:
        raise ValueError("eval_batches is empty: pass a few held-out batches to measure each subclone's loss on")
    if profile is not None:
        profile.check_parent(parent)
    return batches


def _cell_record(
    parent: "Parent",
    destination_plan: "SubclonePlan",
    key: dict[str, Any],
    batches: list,
    seq_len: int,
    prefix: "_WidthPrefix",
    cache: bool,
) -> tuple[dict[str, Any], bool]:
    """One cell's figures, from the cache when it holds them for ``key`` (then True), else measured."""
    path = cache_dir() / "size_grid" / f"{cache_digest(key)}.json"
    # The main process reads and writes the cache, so every process makes the same hit-or-measure decision.
    record = distributed.on_main(_read_cache, path) if cache else None
    if record is not None and record.get("key") == key:
        return record, True
    record = {"key": key, **_measure_cell(parent, destination_plan, batches, seq_len, prefix)}
    if cache:
        distributed.on_main(write_cache_file, path, json.dumps(record).encode())
    return record, False


GRID_CELL_READER = register_reader(
    "size-grid-cell",
    read_grid_cell,
    "one cached cell of a size grid (cache_dir()/size_grid)",
    cache=True,
)
