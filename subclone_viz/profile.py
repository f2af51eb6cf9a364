"""Streaming profile of a parent: how much each block changes the hidden state, and which neurons matter.

One pass of forward hooks over calibration batches. The hooks keep running sums only (never a hidden
state beyond the block being run), so memory grows with the model's widths, not with the number of
tokens. Per block (x its input, y = x + f(x) its output; for post-norm blocks the pre-norm sum):

* the mean over tokens of ||f(x)|| / ||x + f(x)|| (the paper's metric), of ||f(x)|| / ||x|| and of
  1 - cos(x, x + f(x));
* FFN hidden-neuron importance: mean |activation| after the nonlinearity (for SwiGLU the product);
* attention-head importance: mean |per-head attention output| before the output projection.

Per residual layer (the embedding output, then every block output): the mean |activation| of each channel,
an (L+1) x d matrix. Padding tokens (attention mask 0) are not counted. Because everything is a sum with a
count, profiles of separate shards merge exactly with ``+``.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, split="heldout")
    >>> prof = sv.profile(parent, batches, max_tokens=512, progress=False)    # 8,192 tokens or more for real use
    >>> prof.block_metrics["f_over_sum"].shape     # the paper's ||f(x)|| / ||x + f(x)|| per block
    (30,)
    >>> len(prof.shared_ranking())                  # residual channels, most important first
    576
    >>> prof.rank_consistency().spearman.shape      # Spearman correlation between residual layers
    (31, 31)
    >>> prof.save("profile.npz")
    PosixPath('profile.npz')
"""

from __future__ import annotations

import itertools
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from . import __version__, distributed
from ._atomic import DamagedFileError, staged_file
from .capture import BlockStep, capture_blocks, counted_rows, to_device, token_mask
from .parent import readable_parameters

if TYPE_CHECKING:
    from .parent import Parent

PROFILE_FORMAT = 1  # the layout of a saved .npz; bump when it changes
_ARRAYS = ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums")
BLOCK_METRICS = ("f_over_sum", "f_over_x", "one_minus_cos")
BLOCK_METRIC_LABELS = {
    "f_over_sum": "||f(x)|| / ||x + f(x)||",
    "f_over_x": "||f(x)|| / ||x||",
    "one_minus_cos": "1 - cos(x, x + f(x))",
}


class ProfileMismatchError(ValueError):
    pass


@dataclass
class RankConsistency:
    """How much residual layers agree on channel importance: every pair of layers, (L+1) x (L+1)."""

    spearman: np.ndarray
    topk_overlap: np.ndarray
    k: int

    def adjacent_spearman(self) -> np.ndarray:
        """Spearman correlation between each residual layer and the next, (L,)."""
        return np.diag(self.spearman, 1)


@dataclass
class Profile:
    """Running sums from one or more profiling passes, and the statistics derived from them."""

    parent: dict[str, Any]
    source: str
    tokens: int
    block_sums: np.ndarray  # (L, 3) sums over tokens of the BLOCK_METRICS
    residual_abs_sums: np.ndarray  # (L+1, d)
    ffn_abs_sums: np.ndarray  # (L, ffn)
    attn_abs_sums: np.ndarray  # (L, heads * head_dim)
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived statistics
    @property
    def num_layers(self) -> int:
        return self.block_sums.shape[0]

    @property
    def heads(self) -> int:
        return self.parent["dims"]["heads"]

    @property
    def block_metrics(self) -> dict[str, np.ndarray]:
        """Per-block means over tokens, each (L,), keyed by BLOCK_METRICS."""
        means = self.block_sums / max(self.tokens, 1)
        return {name: means[:, i] for i, name in enumerate(BLOCK_METRICS)}

    @property
    def residual_importance(self) -> np.ndarray:
        """Mean |activation| of each residual channel at each residual layer, (L+1, d)."""
        return self.residual_abs_sums / max(self.tokens, 1)

    @property
    def ffn_importance(self) -> np.ndarray:
        """Mean |activation| of each FFN hidden neuron per block, (L, ffn)."""
        return self.ffn_abs_sums / max(self.tokens, 1)

    @property
    def head_importance(self) -> np.ndarray:
        """Mean |per-head attention output| per block and query head, (L, heads)."""
        per_channel = self.attn_abs_sums / max(self.tokens, 1)
        return per_channel.reshape(self.num_layers, self.heads, -1).mean(-1)

    def shared_ranking(self) -> np.ndarray:
        """Residual channels from most to least important, by the sum of scores over residual layers."""
        return np.argsort(-self.residual_importance.sum(0), kind="stable")

    def rank_consistency(self, k: int | None = None) -> RankConsistency:
        """Spearman correlation and top-k overlap of channel importance between every pair of residual layers.

        ``k`` defaults to a quarter of the width. The overlap is |top-k(i) & top-k(j)| / k.
        """
        importance = self.residual_importance  # (L+1, d)
        d = importance.shape[1]
        k = d // 4 if k is None else k
        if not 1 <= k <= d:
            raise ValueError(f"k={k} is out of range: choose 1 <= k <= {d} (the residual width)")
        ranks = np.argsort(np.argsort(importance, axis=1, kind="stable"), axis=1).astype(np.float64)
        ranks -= ranks.mean(1, keepdims=True)
        ranks /= np.linalg.norm(ranks, axis=1, keepdims=True)
        spearman = ranks @ ranks.T
        top = np.zeros_like(importance, dtype=np.float64)
        np.put_along_axis(top, np.argsort(-importance, axis=1, kind="stable")[:, :k], 1.0, axis=1)
        overlap = top @ top.T / k
        return RankConsistency(spearman=spearman, topk_overlap=overlap, k=k)

    # ------------------------------------------------------------------ combining and checking
    def __add__(self, other: "Profile") -> "Profile":
        """Merge two shards of the same parent: sums and counts add, so the merge is exact."""
        if not isinstance(other, Profile):
            return NotImplemented
        if not same_parent(self.parent, other.parent):
            raise ProfileMismatchError(
                f"cannot merge profiles of different parents: {self.parent['name']!r} and {other.parent['name']!r}"
            )
        return Profile(
            parent=self.parent,
            source=self.source if self.source == other.source else f"{self.source} + {other.source}",
            tokens=self.tokens + other.tokens,
            block_sums=self.block_sums + other.block_sums,
            residual_abs_sums=self.residual_abs_sums + other.residual_abs_sums,
            ffn_abs_sums=self.ffn_abs_sums + other.ffn_abs_sums,
            attn_abs_sums=self.attn_abs_sums + other.attn_abs_sums,
        )

    def __radd__(self, other: "Profile | int") -> "Profile":
        """``sum(profiles)`` starts from 0."""
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def check_parent(self, parent: "Parent") -> None:
        """Raise :class:`ProfileMismatchError` unless this profile was measured on ``parent``."""
        theirs = parent_fingerprint(parent)
        if not same_parent(self.parent, theirs):
            raise ProfileMismatchError(
                f"this profile was measured on {self.parent['name']!r} ({self.parent['dims']}), not on the parent "
                f"{theirs['name']!r} ({theirs['dims']}); profile the parent you subclone from"
            )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write one ``.npz`` file, atomically: the sums as arrays and the metadata as a JSON string (no pickles).

        Under several processes only the main one writes; every process returns the path (or raises its error).
        """
        return distributed.on_main(self._write, Path(path), overwrite)

    def _write(self, path: Path, overwrite: bool) -> Path:
        if path.suffix != ".npz":
            raise ValueError(f"profile path {str(path)!r} must end in .npz")
        meta = dict(parent=self.parent, source=self.source, tokens=self.tokens, version=self.version, extra=self.extra,
                    format=PROFILE_FORMAT)
        with staged_file(path, overwrite) as staging, open(staging, "wb") as file:
            np.savez(file, meta=np.array(json.dumps(meta)), **{name: getattr(self, name) for name in _ARRAYS})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        """Read a profile written by :meth:`save`; a file that is not one, or is damaged, raises
        :class:`~subclone_viz._atomic.DamagedFileError` naming it and what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no profile at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in ("meta", *_ARRAYS) if name not in data.files]
                if missing:
                    raise DamagedFileError(f"profile {path} lacks {', '.join(missing)}: it is not a saved profile")
                meta_text = str(data["meta"])
                arrays = {name: data[name] for name in _ARRAYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            if isinstance(error, DamagedFileError):
                raise
            raise DamagedFileError(
                f"profile {path} is damaged or not a saved profile ({type(error).__name__}: {error})"
            ) from error
        meta = _profile_meta(path, meta_text)
        _check_profile_arrays(path, meta, arrays)
        return cls(
            parent=meta["parent"], source=meta["source"], tokens=meta["tokens"], version=meta["version"],
            extra=meta.get("extra", {}), **arrays,
        )

    def summary(self) -> dict[str, Any]:
        """The headline figures as plain JSON-ready values."""
        consistency = self.rank_consistency()
        return {
            "parent": self.parent["name"],
            "description": self.parent.get("description", ""),
            "source": self.source,
            "tokens": self.tokens,
            "blocks": {name: values.round(6).tolist() for name, values in self.block_metrics.items()},
            "adjacent_spearman": consistency.adjacent_spearman().round(4).tolist(),
            "median_adjacent_spearman": float(np.median(consistency.adjacent_spearman())),
            "topk": consistency.k,
            "median_adjacent_topk_overlap": float(np.median(np.diag(consistency.topk_overlap, 1))),
        }


def parent_fingerprint(parent: "Parent") -> dict[str, Any]:
    """What identifies a parent: its name, family, shape and a sample of its first block's weights, and where its
    weights came from (``Parent.provenance``)."""
    block = parent.family.blocks(parent.model)[0]
    checksum = [round(float(v), 6) for _, p in readable_parameters(block) for v in p.detach().flatten()[:4].float().cpu()]
    return {
        "name": parent.name,
        "family": parent.family.name,
        "class": type(parent.model).__name__,
        "dims": parent.dims.to_dict(),
        "description": parent.description,
        "checksum": checksum,
        "provenance": parent.provenance,  # base_model, license, GGUF origin: carried to the saved model card
    }


def same_parent(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # The tolerance absorbs the same weights held in another dtype (bf16 on GPU, fp32 on CPU).
    return (
        a["family"] == b["family"]
        and a["dims"] == b["dims"]
        and len(a["checksum"]) == len(b["checksum"])
        and bool(np.allclose(a["checksum"], b["checksum"], rtol=1e-2, atol=1e-3))
    )


def _profile_meta(path: Path, text: str) -> dict[str, Any]:
    """The metadata of a saved profile, checked field by field."""
    def bad(problem: str) -> DamagedFileError:
        return DamagedFileError(f"profile {path} has bad metadata: {problem}")

    try:
        meta = json.loads(text)
    except ValueError as error:
        raise bad(f"not JSON ({error})") from error
    if not isinstance(meta, dict):
        raise bad(f"a JSON {type(meta).__name__}, not an object")
    missing = [key for key in ("parent", "source", "tokens", "version") if key not in meta]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    if meta.get("format", PROFILE_FORMAT) != PROFILE_FORMAT:
        raise bad(f"format {meta['format']!r}, this version reads format {PROFILE_FORMAT} (upgrade subclone_viz)")
    parent = meta["parent"]
    if not isinstance(parent, dict) or any(key not in parent for key in ("name", "family", "dims", "checksum")):
        raise bad("'parent' must be an object with name, family, dims and checksum")
    dims = parent["dims"]
    if not isinstance(dims, dict) or not all(
        isinstance(dims.get(key), int) and dims[key] >= 1 for key in ("layers", "hidden", "ffn", "heads", "head_dim")
    ):
        raise bad(f"parent dims {dims!r} must hold positive integer layers, hidden, ffn, heads and head_dim")
    if not isinstance(parent["checksum"], list) or not all(isinstance(v, (int, float)) for v in parent["checksum"]):
        raise bad("the parent checksum must be a list of numbers")
    if not isinstance(meta["tokens"], int) or isinstance(meta["tokens"], bool) or meta["tokens"] < 1:
        raise bad(f"tokens={meta['tokens']!r}, not a positive count")
    if not isinstance(meta["source"], str) or not isinstance(meta.get("extra", {}), dict):
        raise bad("'source' must be text and 'extra' an object")
    return meta


def _check_profile_arrays(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Each array has the shape its parent's dims give, finite non-negative values (sums of norms and |.|)."""
    dims = meta["parent"]["dims"]
    layers = dims["layers"]
    expected = {
        "block_sums": (layers, len(BLOCK_METRICS)),
        "residual_abs_sums": (layers + 1, dims["hidden"]),
        "ffn_abs_sums": (layers, dims["ffn"]),
        "attn_abs_sums": (layers, dims["heads"] * dims["head_dim"]),
    }
    for name, shape in expected.items():
        array = arrays[name]
        if array.shape != shape or array.dtype.kind != "f":
            raise DamagedFileError(
                f"profile {path}: {name} is {array.dtype} {array.shape}, expected floats of shape {shape} for its "
                f"parent's dims {dims}"
            )
        if not np.isfinite(array).all():
            raise DamagedFileError(f"profile {path}: {name} holds NaN or infinite values")
        if (array < 0).any():
            raise DamagedFileError(f"profile {path}: {name} holds negative values, impossible for sums of magnitudes")


class _Accumulator:
    """The running sums of one profiling pass (on the device of each block), fed by the capture layer."""

    def __init__(self, parent: "Parent"):
        dims = parent.dims
        self.block_sums = [None] * dims.layers
        self.residual = [None] * (dims.layers + 1)
        self.ffn = [None] * dims.layers
        self.attn = [None] * dims.layers
        self.mask: torch.Tensor | None = None  # (B*T,) bool, None when every token counts
        self.batch_tokens = 0  # tokens counted in the current batch (images: patches and cls tokens)

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, X) -> (counted tokens, X) in fp32."""
        return counted_rows(t, self.mask)

    @staticmethod
    def _add(store: list, index: int, value: torch.Tensor) -> None:
        value = value.double()
        store[index] = value if store[index] is None else store[index] + value

    def on_block(self, step: BlockStep) -> None:
        i = step.index
        total = self._rows(step.total)  # x + f(x), pre-norm sum for post-norm blocks
        # A block dispatched to another device (device_map) got its input on the previous block's device.
        x = self._rows(step.input).to(total.device)
        if i == 0:
            self.batch_tokens = x.shape[0]
            self._add(self.residual, 0, x.abs().sum(0))
        f = total - x
        f_norm, total_norm, x_norm = f.norm(dim=-1), total.norm(dim=-1), x.norm(dim=-1)
        eps = torch.finfo(torch.float32).tiny
        cos = (x * total).sum(-1) / (x_norm * total_norm).clamp_min(eps)
        metrics = torch.stack(
            [
                (f_norm / total_norm.clamp_min(eps)).sum(),
                (f_norm / x_norm.clamp_min(eps)).sum(),
                (1 - cos).sum(),
            ]
        )
        self._add(self.block_sums, i, metrics)
        self._add(self.residual, i + 1, self._rows(step.output).abs().sum(0))

    def on_ffn(self, i: int, activation: torch.Tensor) -> None:
        self._add(self.ffn, i, self._rows(activation).abs().sum(0))

    def on_attention(self, i: int, per_head: torch.Tensor) -> None:
        self._add(self.attn, i, self._rows(per_head).abs().sum(0))


@torch.no_grad()
def profile(
    parent: "Parent",
    batches: Iterable[dict[str, torch.Tensor]],
    max_tokens: int | None = None,
    progress: bool = True,
    source: str | None = None,
) -> Profile:
    """Profile ``parent`` in one streaming pass over ``batches``.

    Args:
        parent: a loaded :class:`~subclone_viz.Parent`.
        batches: dicts with ``input_ids`` and ``attention_mask`` (text) or ``pixel_values`` (images).
        max_tokens: stop after the batch that reaches this many counted tokens (None: every batch).
        progress: show a progress bar.
        source: a description of the data, recorded in the profile (default: ``batches.description``).
    """
    from tqdm.auto import tqdm

    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be a positive token count (or None for every batch)")
    model = parent.model
    was_training = model.training
    model.eval()
    acc = _Accumulator(parent)
    # Under N processes the batches go out in rounds of N, batch j of a round to process j. Every process reads
    # every round, so each knows all token counts and stops after the same batch a single process would.
    processes, rank = distributed.num_processes(), distributed.process_index()
    total = 0  # counted tokens over every process
    own = 0  # counted tokens this process profiled
    hooks = dict(on_block=acc.on_block, on_ffn=acc.on_ffn, on_attention=acc.on_attention)
    try:
        with capture_blocks(parent.family, model, **hooks):
            bar = tqdm(total=max_tokens, unit="tok", desc="profile", disable=not distributed.show_progress(progress),
                       leave=False)
            stream = iter(batches)
            while max_tokens is None or total < max_tokens:
                round_ = list(itertools.islice(stream, processes))
                if not round_:
                    break
                for j, batch in enumerate(round_):
                    if max_tokens is not None and total >= max_tokens:
                        break
                    if j == rank:
                        acc.mask = token_mask(batch)
                        parent.family.logits(model, to_device(batch, parent.input_device))
                        counted = acc.batch_tokens
                        own += counted
                    else:
                        counted = _counted_tokens(parent, batch)
                    total += counted
                    bar.update(counted)
            bar.close()
    finally:
        model.train(was_training)
    own_share = None if own == 0 else Profile(
        parent=parent_fingerprint(parent),
        source=source or getattr(batches, "description", type(batches).__name__),
        tokens=own,
        block_sums=_stack(acc.block_sums),
        residual_abs_sums=_stack(acc.residual),
        ffn_abs_sums=_stack(acc.ffn),
        attn_abs_sums=_stack(acc.attn),
    )
    # Every process adds the shares in rank order, so all of them end with the same Profile.
    shares = [share for share in distributed.gather_objects(own_share) if share is not None]
    if not shares:
        raise ValueError("the batches held no counted tokens: nothing was profiled")
    return sum(shares)


def _counted_tokens(parent: "Parent", batch: dict[str, torch.Tensor]) -> int:
    """The tokens profiling ``batch`` would count, without profiling it: non-padding tokens, or for images
    the patches and prefix tokens of every image."""
    if "input_ids" in batch:
        mask = token_mask(batch)
        return int(batch["input_ids"].numel()) if mask is None else int(mask.sum())
    from .sizing import _tokens_per_sequence

    return int(batch["pixel_values"].shape[0]) * _tokens_per_sequence(parent, batch)


def _stack(values: list[torch.Tensor | None]) -> np.ndarray:
    if any(v is None for v in values):
        raise RuntimeError("a profiling hook never fired: the model's forward skipped a block")
    return torch.stack([v.cpu() for v in values]).numpy()
