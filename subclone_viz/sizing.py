"""A grid of destination sizes: parameters, compute per token and held-out loss before any training.

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
* ``loss``: the subclone's mean held-out loss on ``eval_batches``, before training.

A cell whose spec the parent cannot give (a width that is not a multiple of the head size, depth growth with
a strategy other than "middle"...) is NaN, with the reason in ``reasons``. Each computed cell is cached as
``cache_dir()/size_grid/<key>.json``, keyed on the parent's fingerprint, the profile (source, tokens and a
digest of its sums), the spec, the strategies, ``seq_len`` and the evaluation batches (description and a
digest of their contents), so re-running a grid, or a grid that shares cells with an earlier one, is instant.
Under several processes every cell's evaluation is sharded over them and the main process keeps the cache.

Example::

    import subclone_viz as sv
    parent = sv.load_parent("smollm2-135m")
    heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=128, batch_size=4, split="heldout",
                              max_batches=2)
    prof = sv.profile(parent, heldout)
    layers, hidden = sv.default_grid_axes(parent)    # [6, 10, 15, 20, 25, 30], [192, 288, 384, 480, 576]
    grid = sv.size_grid(parent, prof, layers, hidden, heldout)
    grid.loss                                         # (6, 5) held-out loss of each subclone, untrained
    grid.spec(3, 2)                                   # DestinationSpec(layers=20, hidden=384)
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__, distributed
from ._atomic import DamagedFileError, note_rebuild, read_cache_file, write_cache_file
from .data import cache_dir
from .plan import DEPTH_STRATEGIES, SCALINGS, WIDTH_STRATEGIES, DestinationSpec, SpecError, plan, spec_choices

if TYPE_CHECKING:
    from .parent import Parent
    from .plan import SubclonePlan
    from .profile import Profile

QUANTITIES = ("loss", "params", "flops_per_token")
# Fractions of the parent's depth and width that the default grid axes sample.
_DEPTH_FRACTIONS = (1 / 5, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 1)
_WIDTH_FRACTIONS = (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1)


@dataclass
class SizeGrid:
    """Per (layers[i], hidden[j]) destination: parameters, forward FLOPs per token and untrained held-out loss."""

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
    cache_hits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.layers), len(self.hidden)

    def spec(self, i: int, j: int) -> DestinationSpec:
        """The destination spec of cell (i, j): ``layers[i]`` blocks, width ``hidden[j]``."""
        rows, cols = self.shape
        if not (0 <= i < rows and 0 <= j < cols):
            raise IndexError(f"cell ({i}, {j}) is outside the {rows} x {cols} grid")
        return DestinationSpec(layers=self.layers[i], hidden=self.hidden[j])

    def quantity(self, name: str) -> np.ndarray:
        """One of ``QUANTITIES`` as an array."""
        if name not in QUANTITIES:
            raise ValueError(f"quantity={name!r} is not a grid quantity: choose one of {', '.join(QUANTITIES)}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become nested lists with None for NaN."""

        def plain(array: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in array]

        return {
            "parent": self.parent,
            "layers": list(self.layers),
            "hidden": list(self.hidden),
            "params": plain(self.params),
            "flops_per_token": plain(self.flops_per_token),
            "loss": plain(self.loss),
            "reasons": self.reasons,
            "dims": self.dims,
            "depth": self.depth,
            "width": self.width,
            "scaling": self.scaling,
            "seq_len": self.seq_len,
            "eval_source": self.eval_source,
            "cache_hits": self.cache_hits,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SizeGrid":
        arrays = {
            name: np.array([[np.nan if v is None else v for v in row] for row in data[name]], dtype=float).reshape(
                len(data["layers"]), len(data["hidden"])
            )
            for name in QUANTITIES
        }
        rest = {k: v for k, v in data.items() if k not in QUANTITIES}
        return cls(**arrays, **rest)


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


def flops_per_token(model: nn.Module, layers: int, heads: int, head_dim: int, seq_len: int) -> int:
    """Forward FLOPs per token: ``2 * matmul weights + 4 * layers * seq_len * heads * head_dim``."""
    return 2 * matmul_weights(model) + 4 * layers * seq_len * heads * head_dim


def _json_ready(value: Any) -> Any:
    """``value`` as it reads back from JSON, so that a cached key compares equal to a fresh one."""
    return json.loads(json.dumps(value, default=str))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _batches_digest(batches: Sequence[dict[str, torch.Tensor]]) -> str:
    hasher = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            if isinstance(value, torch.Tensor):
                hasher.update(key.encode())
                hasher.update(str(tuple(value.shape)).encode())
                hasher.update(value.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:24]


def _profile_key(profile: "Profile | None") -> dict[str, Any] | None:
    if profile is None:
        return None
    hasher = hashlib.sha256()
    for array in (profile.block_sums, profile.residual_abs_sums, profile.ffn_abs_sums, profile.attn_abs_sums):
        hasher.update(np.ascontiguousarray(array).tobytes())
    return {"source": profile.source, "tokens": profile.tokens, "sums": hasher.hexdigest()[:24]}


@torch.no_grad()
def _tokens_per_sequence(parent: "Parent", batch: dict[str, torch.Tensor]) -> int:
    """How many tokens the blocks see per sequence: the text length, or (images) patches plus prefix tokens."""
    if "input_ids" in batch:
        return int(batch["input_ids"].shape[1])
    seen: list[int] = []

    def hook(module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).shape[1])

    handle = parent.family.blocks(parent.model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        one = {k: v[:1].to(parent.input_device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        parent.family.logits(parent.model, one)
    finally:
        handle.remove()
    return seen[0]


def _read_cache(path: Path) -> dict[str, Any] | None:
    """A cell's cached record, or None when there is none or it is damaged (said in one warning line)."""
    try:
        payload = read_cache_file(path)
        if payload is None:
            return None
        record = json.loads(payload)
        if not isinstance(record, dict) or any(name not in record for name in ("key", "dims", *QUANTITIES)):
            raise DamagedFileError(f"{path} is not a size-grid cell record")
        return record
    except (DamagedFileError, ValueError) as error:
        note_rebuild("size-grid cell", str(error) if isinstance(error, DamagedFileError) else f"{path}: {error}")
        return None


def _measure_cell(parent: "Parent", destination_plan: "SubclonePlan", batches: list, seq_len: int) -> dict[str, Any]:
    from .evaluate import evaluate
    from .subclone import subclone

    calibration = batches if destination_plan.scaling == "calibrated" else None
    model = subclone(parent, destination_plan, calibration_batches=calibration)
    dims = destination_plan.destination_dims
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops_per_token(model, dims.layers, dims.heads, dims.head_dim, seq_len),
        # A bare encoder (BertModel) has no loss to score; its size and compute still count.
        "loss": evaluate(model, parent.family, batches).loss if parent.family.task != "encoder" else float("nan"),
        "dims": dims.to_dict(),
    }


def size_grid(
    parent: "Parent",
    profile: "Profile | None",
    layers: Sequence[int] | None = None,
    hidden: Sequence[int] | None = None,
    eval_batches: Iterable[dict[str, torch.Tensor]] | None = None,
    depth: str = "middle",
    width: str = "importance",
    scaling: str = "sqrt",
    seq_len: int | None = None,
    cache: bool = True,
    progress: bool = True,
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
    """
    from tqdm.auto import tqdm

    from .profile import parent_fingerprint

    default_layers, default_hidden = default_grid_axes(parent)
    layers = list(default_layers if layers is None else layers)
    hidden = list(default_hidden if hidden is None else hidden)
    if not layers or not hidden:
        raise ValueError(f"the grid needs at least one layer count and one width; got layers={layers}, hidden={hidden}")
    # Strategy mistakes are the caller's, not a cell's: raise them before any cell is marked invalid.
    for name, value, choices in (("depth", depth, DEPTH_STRATEGIES), ("width", width, WIDTH_STRATEGIES),
                                 ("scaling", scaling, SCALINGS)):
        if not isinstance(value, str) or value not in choices:
            raise SpecError(f"{name}={value!r} is not valid for a size grid: choose one of {', '.join(choices)}")
    if profile is None and (width == "importance" or depth == "metric"):
        raise SpecError("width='importance' and depth='metric' need a profile: pass sv.profile(parent, batches)")
    batches = list(eval_batches or [])
    if not batches:
        raise ValueError("eval_batches is empty: pass a few held-out batches to measure each subclone's loss on")
    if profile is not None:
        profile.check_parent(parent)
    seq_len = _tokens_per_sequence(parent, batches[0]) if seq_len is None else seq_len
    strategies = dict(depth=depth, width=width, scaling=scaling)
    count = len(batches)
    eval_source = getattr(eval_batches, "description", f"{count} held-out batch{'es' if count > 1 else ''}")
    common_key = _json_ready({
        "parent": parent_fingerprint(parent),
        "profile": _profile_key(profile),
        "strategies": strategies,
        "seq_len": seq_len,
        "eval": {"description": eval_source, "contents": _batches_digest(batches)},
        "version": __version__,
    })
    shape = (len(layers), len(hidden))
    results = {name: np.full(shape, np.nan) for name in QUANTITIES}
    reasons: list[list[str | None]] = [[None] * shape[1] for _ in range(shape[0])]
    cell_dims: list[list[dict[str, int] | None]] = [[None] * shape[1] for _ in range(shape[0])]
    cache_hits = 0
    bar_off = not distributed.show_progress(progress)
    for i, j in tqdm(list(np.ndindex(shape)), desc="size grid", disable=bar_off, leave=False, file=sys.stderr):
        spec = DestinationSpec(layers=layers[i], hidden=hidden[j])
        try:
            destination_plan = plan(parent, profile, spec, **strategies)
        except SpecError as error:
            reasons[i][j] = str(error)
            continue
        key = {**common_key, "spec": {"layers": int(spec.layers), "hidden": int(spec.hidden)}}
        path = cache_dir() / "size_grid" / f"{_digest(key)}.json"
        # The main process reads and writes the cache, so every process makes the same hit-or-measure decision.
        record = distributed.on_main(_read_cache, path) if cache else None
        if record is not None and record.get("key") == key:
            cache_hits += 1
        else:
            record = {"key": key, **_measure_cell(parent, destination_plan, batches, seq_len)}
            if cache:
                distributed.on_main(write_cache_file, path, json.dumps(record).encode())
        for name in QUANTITIES:
            results[name][i, j] = record[name]
        cell_dims[i][j] = record["dims"]
    return SizeGrid(
        parent=parent.name,
        layers=layers,
        hidden=hidden,
        reasons=reasons,
        dims=cell_dims,
        depth=depth,
        width=width,
        scaling=scaling,
        seq_len=seq_len,
        eval_source=eval_source,
        cache_hits=cache_hits,
        **results,
    )
