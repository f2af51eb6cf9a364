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

The same pass collects what the other importance estimators (:mod:`subclone_viz.importance`) read, in
``Profile.stats``: mean |input| and |output| of every norm on the residual stream, squared inputs of every
linear layer that reads the residual stream, squared FFN activations and head outputs, per-head output norms.
:func:`add_taylor` adds first-order Taylor sums in a second pass, with gradients.

Every sum is also kept per shard (batch b in shard b % S, ``shards=8`` by default), so that
:meth:`Profile.resample` rebuilds the profile of any bootstrap or split-half resample of the calibration
sample without reading it again (:func:`~subclone_viz.stability.stability`).

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, shuffle=True)
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

import contextlib
import dataclasses
import itertools
import json
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import distributed
from ._atomic import DamagedFileError, staged_file
from ._version import __version__
from .capture import (
    BlockStep,
    RunningSums,
    capture_blocks,
    capture_modules,
    counted_rows,
    forward_before,
    to_device,
    token_mask,
    tokens_per_sequence,
)
from .errors import UserError
from .experts import ExpertSums, is_moe
from .importance import ESTIMATORS, sums_collected_for
from .parent import parent_fingerprint, same_parent
from .records import Record, register_record
from .settings import ProfileSettings

if TYPE_CHECKING:
    from .parent import Parent

_ARRAYS = ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums")
BLOCK_METRICS = ("f_over_sum", "f_over_x", "one_minus_cos")
BLOCK_METRIC_LABELS = {
    "f_over_sum": "||f(x)|| / ||x + f(x)||",
    "f_over_x": "||f(x)|| / ||x||",
    "one_minus_cos": "1 - cos(x, x + f(x))",
}


class ProfileMismatchError(UserError, ValueError):
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


@register_record
@dataclass
class Profile(Record):
    """Running sums from one or more profiling passes, and the statistics derived from them.

    A record stored as one ``.npz`` (``save``/``load``): the sums as arrays, the rest as a JSON string with
    the format and version; ``to_dict`` gives the same as plain JSON data (arrays as nested lists).
    """

    FORMAT = "subclone_viz.profile"
    VERSION = 2
    READS = (0, 1)  # 1: an integer ``format`` and the library's ``version``; 0: neither

    parent: dict[str, Any]
    source: str
    tokens: int
    block_sums: np.ndarray  # (L, 3) sums over tokens of the BLOCK_METRICS
    residual_abs_sums: np.ndarray  # (L+1, d)
    ffn_abs_sums: np.ndarray  # (L, ffn)
    attn_abs_sums: np.ndarray  # (L, heads * head_dim)
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, np.ndarray] = field(default_factory=dict)  # further running sums the estimators read
    shards: dict[str, np.ndarray] = field(default_factory=dict)  # (S, ...) per-shard copies of every sum, and "tokens"

    # ------------------------------------------------------------------ shards and resampling
    @property
    def num_shards(self) -> int:
        """How many shards the sums were kept in (0 for a profile saved without them)."""
        return len(self.shards["tokens"]) if "tokens" in self.shards else 0

    def sums(self) -> dict[str, np.ndarray]:
        """Every running sum by name: the four fields, then ``stats``."""
        return {
            "block_sums": self.block_sums,
            "residual_abs_sums": self.residual_abs_sums,
            "ffn_abs_sums": self.ffn_abs_sums,
            "attn_abs_sums": self.attn_abs_sums,
            **self.stats,
        }

    def resample(self, counts: Sequence[int] | np.ndarray) -> "Profile":
        """The profile of a resample of the shards: shard s counted ``counts[s]`` times (0 leaves it out).

        A bootstrap draws ``counts`` from a multinomial, a split half takes 0/1 counts; either needs no
        second pass over the data, because every statistic is a sum over tokens.
        """
        counts = np.asarray(counts)
        if self.num_shards == 0:
            raise ValueError(
                "this profile keeps no per-shard sums (saved by an older version, or merged from one): profile "
                "again with sv.profile(parent, batches, shards=8) to resample it"
            )
        if counts.shape != (self.num_shards,) or (counts < 0).any() or counts.sum() == 0:
            raise ValueError(
                f"counts={counts.tolist()} must be {self.num_shards} non-negative shard counts, not all zero"
            )
        weighted = {name: np.tensordot(counts.astype(np.float64), shard, axes=1) for name, shard in self.shards.items()}
        tokens = int(weighted.pop("tokens"))
        if tokens == 0:
            raise ValueError(
                f"counts={counts.tolist()} picks only empty shards (shard tokens {self.shards['tokens'].tolist()})"
            )
        fields = ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums")
        return Profile(
            parent=self.parent,
            source=f"{self.source} (shards resampled {counts.tolist()})",
            tokens=tokens,
            version=self.version,
            extra=dict(self.extra),
            **{name: weighted.pop(name) for name in fields},
            stats=weighted,
        )

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
        shared_stats = self.stats.keys() & other.stats.keys()
        # Shard s of either holds other batches than any shard of the other, so shard-wise sums stay valid
        # resampling units: processes of one distributed pass (batch g in shard g % S everywhere) merge into
        # exactly the shards of a single process. Profiles of different shard counts list theirs side by side.
        shards = {}
        if self.num_shards and other.num_shards and self.shards.keys() == other.shards.keys():
            join = np.add if self.num_shards == other.num_shards else lambda a, b: np.concatenate([a, b])
            shards = {name: join(self.shards[name], other.shards[name]) for name in self.shards}
        return Profile(
            parent=self.parent,
            source=self.source if self.source == other.source else f"{self.source} + {other.source}",
            tokens=self.tokens + other.tokens,
            block_sums=self.block_sums + other.block_sums,
            residual_abs_sums=self.residual_abs_sums + other.residual_abs_sums,
            ffn_abs_sums=self.ffn_abs_sums + other.ffn_abs_sums,
            attn_abs_sums=self.attn_abs_sums + other.attn_abs_sums,
            extra={**other.extra, **self.extra},
            stats={name: self.stats[name] + other.stats[name] for name in sorted(shared_stats)},
            shards=shards,
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
        meta = {"format": self.FORMAT, "version": self.VERSION, **self._meta()}
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays.update({f"stat_{name}": value for name, value in self.stats.items()})
        arrays.update({f"shard_{name}": value for name, value in self.shards.items()})
        with staged_file(path, overwrite) as staging, open(staging, "wb") as file:
            np.savez(file, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        """Read a profile written by :meth:`save`; a file that is not one, or is damaged, raises
        :class:`~subclone_viz._atomic.DamagedFileError` naming it and what is wrong."""
        path = Path(path)
        if path.is_dir():
            raise DamagedFileError(f"profile {path} is a directory, not a saved profile")
        if not path.is_file():
            raise FileNotFoundError(f"no profile at {path}")
        if not zipfile.is_zipfile(path):  # np.load would read a bare .npy array, or a pickle, as something else
            raise DamagedFileError(f"profile {path} is damaged or not a saved profile (it is not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [name for name in ("meta", *_ARRAYS) if name not in data.files]
                if missing:
                    raise DamagedFileError(f"{path} lacks {', '.join(missing)}: it is not a saved profile")
                meta_text = str(data["meta"])
                arrays = {name: data[name] for name in _ARRAYS}
                stats = {name[len("stat_") :]: data[name] for name in data.files if name.startswith("stat_")}
                shards = {name[len("shard_") :]: data[name] for name in data.files if name.startswith("shard_")}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            if isinstance(error, DamagedFileError):
                raise
            raise DamagedFileError(
                f"profile {path} is damaged or not a saved profile ({type(error).__name__}: {error})"
            ) from error
        try:
            meta = _profile_meta(meta_text)
        except ValueError as error:
            raise DamagedFileError(f"{path}: {error}") from error
        return cls.from_document({**meta, "arrays": arrays, "stats": stats, "shards": shards}, path)

    def _meta(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "source": self.source,
            "tokens": self.tokens,
            "library_version": self.version,
            "extra": self.extra,
        }

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain JSON data: its metadata and every sum as nested lists."""

        def plain(arrays: dict[str, np.ndarray]) -> dict[str, list]:
            return {name: np.asarray(value).tolist() for name, value in arrays.items()}

        return {
            **self._meta(),
            "arrays": plain({name: getattr(self, name) for name in _ARRAYS}),
            "stats": plain(self.stats),
            "shards": plain(self.shards),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profile":
        """A profile from :meth:`to_dict`'s data (or a saved file's), checked: its metadata field by field, every
        sum of the shape its parent's dims give, finite and (sums of magnitudes) non-negative, shards adding
        up to the totals."""
        _check_meta(data)
        groups = {}
        for group in ("arrays", "stats", "shards"):
            if not isinstance(data.get(group, {}), dict):
                raise ValueError(f"{group!r} must map names to arrays")
            groups[group] = {name: _float_array(name, value) for name, value in data.get(group, {}).items()}
        arrays = groups["arrays"]
        missing = [name for name in _ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}: it is not a saved profile")
        _check_profile_arrays(data, arrays)
        _check_stats_and_shards(arrays, groups["stats"], groups["shards"])
        return cls(
            parent=data["parent"],
            source=data["source"],
            tokens=data["tokens"],
            version=data.get("library_version", __version__),
            extra=data.get("extra", {}),
            stats=groups["stats"],
            shards=groups["shards"],
            **{name: arrays[name] for name in _ARRAYS},
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


def _profile_meta(text: str) -> dict[str, Any]:
    """A saved profile's metadata in today's layout: the files of version 1 (an integer ``format``, the library's
    ``version``) and 0 (no ``format``) are renamed to it."""
    try:
        meta = json.loads(text)
    except ValueError as error:
        raise ValueError(f"bad metadata: not JSON ({error})") from error
    if not isinstance(meta, dict):
        raise ValueError(f"bad metadata: a JSON {type(meta).__name__}, not an object")
    if isinstance(meta.get("format"), str):
        return meta
    old = {key: value for key, value in meta.items() if key not in ("format", "version")}
    if "version" in meta:
        old["library_version"] = meta["version"]
    return {"format": Profile.FORMAT, "version": meta["format"], **old} if "format" in meta else old


def _check_meta(meta: dict[str, Any]) -> None:
    """The metadata of a profile, checked field by field."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"bad metadata: {problem}")

    missing = [key for key in ("parent", "source", "tokens") if key not in meta]
    if missing:
        raise bad(f"no {', '.join(missing)}")
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


def _float_array(name: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64) if isinstance(value, list) else np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} is not an array of numbers ({error})") from error
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name} is a {array.dtype} array, not numbers")
    return array


def _check_profile_arrays(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
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
            raise ValueError(
                f"{name} is {array.dtype} {array.shape}, expected floats of shape {shape} for its parent's dims {dims}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        if (array < 0).any():
            raise ValueError(f"{name} holds negative values, impossible for sums of magnitudes")


def _check_stats_and_shards(
    arrays: dict[str, np.ndarray], stats: dict[str, np.ndarray], shards: dict[str, np.ndarray]
) -> None:
    """Further sums are finite; per-shard sums, when present, cover every sum and add up to it."""
    for name, array in stats.items():
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise ValueError(f"statistic {name} is not a finite float array")
    if not shards:
        return
    totals = {**arrays, **stats}
    if "tokens" not in shards or shards.keys() - {"tokens"} != totals.keys():
        raise ValueError(f"its shards ({sorted(shards)}) do not match its sums ({sorted(totals)})")
    count = len(shards["tokens"])
    for name, shard in shards.items():
        if name == "tokens":
            continue
        if shard.shape != (count, *totals[name].shape) or not np.allclose(
            shard.sum(0), totals[name], rtol=1e-6, atol=1e-9
        ):
            raise ValueError(f"the {count} shards of {name} do not add up to its total")


class _Accumulator(RunningSums):
    """The profile's own running sums (block metrics, residual, FFN and attention |activation|), fed by the
    capture layer on the device of each block. Its ``mask`` says which rows count, for every collector."""

    def __init__(self, parent: "Parent"):
        super().__init__(lambda t: counted_rows(t, self.mask))
        layers = parent.dims.layers
        self.stores = {
            "block_sums": [None] * layers,
            "residual_abs_sums": [None] * (layers + 1),
            "ffn_abs_sums": [None] * layers,
            "attn_abs_sums": [None] * layers,
        }
        self.mask: torch.Tensor | None = None  # (B*T,) bool, None when every token counts
        self.batch_tokens = 0  # tokens counted in the current batch (images: patches and cls tokens)
        # (a block's output, its row norms) where the output is its x + f(x) (pre-norm blocks): the next block's x
        self._output_norms: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_block(self, step: BlockStep) -> None:
        i = step.index
        total = self.rows(step.total)  # x + f(x), pre-norm sum for post-norm blocks
        # A block dispatched to another device (device_map) got its input on the previous block's device.
        x = self.rows(step.input).to(total.device)
        if i == 0:
            self.batch_tokens = x.shape[0]
            self.add("residual_abs_sums", 0, self.rows.abs_sum(step.input))
        f = torch.sub(total, x, out=self.rows.scratch("f(x)", total))
        f_norm, total_norm = f.norm(dim=-1), total.norm(dim=-1)
        previous = self._output_norms
        x_norm = previous[1].to(total.device) if previous and previous[0] is step.input else x.norm(dim=-1)
        self._output_norms = (step.output, total_norm) if step.total is step.output else None
        eps = torch.finfo(torch.float32).tiny
        # x . (x + f) from the three norms (law of cosines): no further pass over the (N, d) rows.
        dot = (x_norm.square() + total_norm.square() - f_norm.square()) / 2
        cos = dot / (x_norm * total_norm).clamp_min(eps)
        metrics = torch.stack(
            [
                (f_norm / total_norm.clamp_min(eps)).sum(),
                (f_norm / x_norm.clamp_min(eps)).sum(),
                (1 - cos).sum(),
            ]
        )
        self.add("block_sums", i, metrics)
        self.add("residual_abs_sums", i + 1, self.rows.abs_sum(step.output))

    def on_ffn(self, i: int, activation: torch.Tensor) -> None:
        self.add("ffn_abs_sums", i, self.rows.abs_sum(activation))

    def on_attention(self, i: int, per_head: torch.Tensor) -> None:
        self.add("attn_abs_sums", i, self.rows.abs_sum(per_head))

    def take_sums(self) -> dict[str, torch.Tensor]:
        self.rows.forget()
        self._output_norms = None
        return super().take_sums()


class _Collectors:
    """The profile's own sums and those every registered estimator declares (``Estimator.collects``), fed
    from one set of capture hooks."""

    def __init__(self, parent: "Parent"):
        self.acc = _Accumulator(parent)
        self.all: list[RunningSums] = [self.acc] + [
            factory(parent, self.acc.rows) for factory in sums_collected_for(ESTIMATORS.values())
        ]
        self.owners: dict[str, list[RunningSums]] = {}  # watched module name -> the collectors watching it
        for collector in self.all:
            for name in collector.modules:
                self.owners.setdefault(name, []).append(collector)
        self.modules = {name: module for c in self.all for name, module in c.modules.items()}
        # Each hook calls only the collectors that read it (a few hundred hook calls a forward).
        self._on_block = _overriding(self.all, "on_block")
        self._on_ffn = _overriding(self.all, "on_ffn")
        self._on_attention = _overriding(self.all, "on_attention")

    def on_block(self, step: BlockStep) -> None:
        for collector in self._on_block:
            collector.on_block(step)

    def on_ffn(self, i: int, activation: torch.Tensor) -> None:
        for collector in self._on_ffn:
            collector.on_ffn(i, activation)

    def on_attention(self, i: int, per_head: torch.Tensor) -> None:
        for collector in self._on_attention:
            collector.on_attention(i, per_head)

    def on_module(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        for collector in self.owners[name]:
            collector.on_module(name, x, y)

    def take_sums(self) -> dict[str, torch.Tensor]:
        """This batch's sums of every collector, by name; resets them."""
        taken: dict[str, torch.Tensor] = {}
        for collector in self.all:
            sums = collector.take_sums()
            clash = taken.keys() & sums.keys()
            if clash:
                raise ValueError(
                    f"{type(collector).__name__} collects {sorted(clash)}, which another collector "
                    f"already collects: give its sums other names"
                )
            taken.update(sums)
        return taken

    def metadata(self) -> dict[str, Any]:
        return {key: value for c in self.all for key, value in c.metadata().items()}


def _overriding(collectors: list[RunningSums], method: str) -> list[RunningSums]:
    """The collectors whose class overrides ``RunningSums.method`` (the others' is a no-op)."""
    return [c for c in collectors if getattr(type(c), method) is not getattr(RunningSums, method)]


def _head_to_skip(parent: "Parent", sums: _Collectors) -> tuple[torch.nn.Module | None, set[str]]:
    """The output layer the profile's forward stops at (no sum reads its result), and the watched names it is
    known by (their collectors get its input as it is called, and None for its output). None where a collector
    watching it reads outputs (one without ``inputs_only = True``): then the forward runs whole."""
    head = parent.family.output_module(parent.model)
    names = {name for name, module in sums.modules.items() if module is head}
    if head is None or any(not getattr(c, "inputs_only", False) for name in names for c in sums.owners[name]):
        return None, set()
    return head, names


class _ShardedSums:
    """Running sums kept in a fixed number of shards: batch b adds into shard b % S (memory: S copies)."""

    def __init__(self, num_shards: int):
        self.num_shards = num_shards
        self.sums: dict[str, torch.Tensor] = {}  # name -> (S, ...) fp64
        self.tokens = np.zeros(num_shards, dtype=np.int64)

    def add(self, batch_sums: dict[str, torch.Tensor], tokens: int, batch_index: int) -> None:
        shard = batch_index % self.num_shards
        for name, value in batch_sums.items():
            if name not in self.sums:
                self.sums[name] = value.new_zeros((self.num_shards, *value.shape))
            self.sums[name][shard] += value
        self.tokens[shard] += tokens

    def totals(self) -> dict[str, np.ndarray]:
        return {name: value.sum(0).cpu().numpy() for name, value in self.sums.items()}

    def per_shard(self) -> dict[str, np.ndarray]:
        return {"tokens": self.tokens.copy(), **{name: value.cpu().numpy() for name, value in self.sums.items()}}


class _Dealer:
    """Deals a stream of batches to the processes of a distributed job and counts every process's tokens.

    Batches go out in rounds of N, batch j of a round to process j. Every process reads every round, so each
    knows all token counts (its own measured, the others' counted without running them) and stops after the
    same batch a single process would stop after (``max_tokens``). Batch g of the stream lands in shard
    g % S on every process, so per-shard sums match one process too.
    """

    def __init__(self, parent: "Parent", batches: Iterable[dict[str, torch.Tensor]], max_tokens: int | None):
        self.stream = iter(batches)
        self.max_tokens = max_tokens
        self.processes, self.rank = distributed.num_processes(), distributed.process_index()
        self.total = 0  # counted tokens over every process
        self.tokens_per_image: int | None = None
        if self.processes > 1:
            # Measured before any capture hook is installed, on the first image, so it adds to no statistic.
            first = next(self.stream, None)
            if first is not None:
                if "pixel_values" in first:
                    with torch.no_grad():
                        self.tokens_per_image = tokens_per_sequence(
                            parent.family, parent.model, first, parent.input_device
                        )
                self.stream = itertools.chain([first], self.stream)

    def _done(self) -> bool:
        return self.max_tokens is not None and self.total >= self.max_tokens

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor], bool]]:
        """(position in the stream, batch, whether this process runs it), until ``max_tokens`` are counted."""
        index = 0
        while not self._done():
            round_ = list(itertools.islice(self.stream, self.processes))
            if not round_:
                return
            for j, batch in enumerate(round_):
                if self._done():
                    return
                yield index, batch, j == self.rank
                index += 1

    def count(self, tokens: int) -> None:
        self.total += tokens

    def tokens_elsewhere(self, batch: dict[str, torch.Tensor]) -> int:
        """The tokens another process counts for ``batch``: its non-padding tokens, or for images every
        image's patches and prefix tokens."""
        if "input_ids" in batch:
            mask = token_mask(batch)
            return int(batch["input_ids"].numel()) if mask is None else int(mask.sum())
        return int(batch["pixel_values"].shape[0]) * self.tokens_per_image


def _sum_shares(shares: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-process dictionaries of sums added key by key, in rank order (the same result on every process)."""
    return {name: sum(share[name] for share in shares) for name in shares[0]}


@torch.no_grad()
def profile(
    parent: "Parent",
    batches: Iterable[dict[str, torch.Tensor]],
    max_tokens: int | None = None,
    progress: bool = True,
    source: str | None = None,
    shards: int = ProfileSettings().shards,
) -> Profile:
    """Profile ``parent`` in one streaming pass over ``batches``.

    Args:
        parent: a loaded :class:`~subclone_viz.Parent`.
        batches: dicts with ``input_ids`` and ``attention_mask`` (text) or ``pixel_values`` (images).
        max_tokens: stop after the batch that reaches this many counted tokens (None: every batch).
        progress: show a progress bar.
        source: a description of the data, recorded in the profile (default: ``batches.description``).
        shards: keep the sums in this many shards too (batch b in shard b % shards), so that
            :meth:`Profile.resample` and :func:`~subclone_viz.stability.stability` estimate the calibration
            uncertainty without a second pass; memory grows with ``shards`` times the model's widths.
    """
    from tqdm.auto import tqdm

    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be a positive token count (or None for every batch)")
    if not isinstance(shards, (int, np.integer)) or not 1 <= shards <= 1024:
        raise ValueError(f"shards={shards!r} must be a whole number of shards from 1 to 1024")
    model = parent.model
    was_training = model.training
    # eval() and train() set every module's mode (a few ms): skipped when every module is in eval mode already.
    switch_mode = any(module.training for module in model.modules())
    if switch_mode:
        model.eval()
    sums = _Collectors(parent)
    acc = sums.acc
    head, head_watchers = _head_to_skip(parent, sums)
    experts = ExpertSums(parent, acc) if is_moe(parent) else None  # routers and fused experts (experts.py)
    sharded = _ShardedSums(int(shards))
    dealer = _Dealer(parent, batches, max_tokens)
    own = 0  # counted tokens this process profiled

    try:
        with (
            capture_blocks(
                parent.family, model, on_block=sums.on_block, on_ffn=sums.on_ffn, on_attention=sums.on_attention
            ),
            capture_modules(sums.modules, sums.on_module, inputs_only=head_watchers),
            experts.capture() if experts is not None else contextlib.nullcontext(),
        ):
            bar = tqdm(
                total=max_tokens,
                unit="tok",
                desc="profile",
                disable=not distributed.show_progress(progress),
                leave=False,
            )
            for index, batch, mine in dealer:
                if mine:
                    acc.mask = token_mask(batch)
                    # No statistic reads the output layer's result: stop as it is called (a big LM head).
                    forward_before(lambda: parent.family.logits(model, to_device(batch, parent.input_device)), head)
                    counted = acc.batch_tokens
                    sharded.add(
                        {**sums.take_sums(), **(experts.take_sums() if experts is not None else {})}, counted, index
                    )
                    own += counted
                else:
                    counted = dealer.tokens_elsewhere(batch)
                dealer.count(counted)
                bar.update(counted)
            bar.close()
    finally:
        if switch_mode:
            model.train(was_training)
    own_share = None
    if own:
        totals = sharded.totals()
        own_share = Profile(
            parent=parent_fingerprint(parent),
            source=source or getattr(batches, "description", type(batches).__name__),
            tokens=own,
            extra=sums.metadata(),
            **{name: totals.pop(name) for name in _ARRAYS},
            stats=totals,
            shards=sharded.per_shard(),
        )
    # Every process adds the shares in rank order, so all of them end with the same Profile.
    shares = [share for share in distributed.gather_objects(own_share) if share is not None]
    if not shares:
        raise ValueError("the batches held no counted tokens: nothing was profiled")
    return sum(shares)


def add_taylor(
    profile: Profile,
    parent: "Parent",
    batches: Iterable[dict[str, torch.Tensor]],
    max_tokens: int | None = None,
    progress: bool = True,
) -> Profile:
    """``profile`` with the first-order Taylor statistics added (``importance="taylor"`` reads them).

    A pass with gradients over ``batches``: for each residual layer, FFN neuron and attention-output channel,
    the signed sum over counted tokens of activation x dLoss/dactivation (the first-order change of the loss
    when that activation is zeroed). Signed sums add across batches and shards; the estimator takes their
    absolute value. Costs about one training step per batch (no optimizer, no parameter gradients kept).
    Under ``accelerate launch`` the batches are dealt to the processes as :func:`profile` deals them, and
    every process ends with the sums one process would compute.

    Args:
        profile: the parent's profile (its shards get the Taylor sums too, batch b in shard b % S).
        parent: the profiled parent; it needs a loss (a causal or masked LM, or an image classifier).
        batches: calibration batches, with ``labels`` for image classifiers.
        max_tokens: stop after the batch that reaches this many counted tokens (None: every batch).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    profile.check_parent(parent)
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be a positive token count (or None for every batch)")
    model, family = parent.model, parent.family
    layers = parent.dims.layers
    captured: dict[str, list] = {}  # this batch's activations, kept with their autograd graph

    def keep(kind: str, index: int, size: int, tensor: torch.Tensor) -> None:
        captured.setdefault(kind, [None] * size)[index] = tensor

    def on_block(step: BlockStep) -> None:
        if step.index == 0:
            keep("residual", 0, layers + 1, step.input)
        keep("residual", step.index + 1, layers + 1, step.output)

    sharded = _ShardedSums(profile.num_shards or 1)
    dealer = _Dealer(parent, batches, max_tokens)
    own = 0  # counted tokens this process ran
    was_training = model.training
    model.eval()
    try:
        with capture_blocks(
            family,
            model,
            on_block=on_block,
            on_ffn=lambda i, a: keep("ffn", i, layers, a),
            on_attention=lambda i, a: keep("attn", i, layers, a),
        ):
            bar = tqdm(
                total=max_tokens,
                unit="tok",
                desc="taylor",
                disable=not distributed.show_progress(progress),
                leave=False,
            )
            for batch_index, batch, mine in dealer:
                if not mine:
                    counted = dealer.tokens_elsewhere(batch)
                    dealer.count(counted)
                    bar.update(counted)
                    continue
                batch = to_device(batch, parent.input_device)
                mask = token_mask(batch)
                captured.clear()
                with torch.enable_grad():
                    loss = family.loss(model, batch)
                    names = [(kind, j) for kind in ("residual", "ffn", "attn") for j in range(len(captured[kind]))]
                    activations = [captured[kind][j] for kind, j in names]
                    # Gradients of the activations only: no parameter's .grad is written.
                    grads = torch.autograd.grad(loss, activations, allow_unused=True)
                sums: dict[str, list] = {"residual": [], "ffn": [], "attn": []}
                for (kind, _), a, g in zip(names, activations, grads):
                    product = a.detach() * (g if g is not None else torch.zeros_like(a))  # (B, T, X)
                    rows = counted_rows(product, mask)  # (counted tokens, X)
                    sums[kind].append(rows.double().sum(0).to(activations[0].device))
                counted = rows.shape[0]
                captured.clear()
                sharded.add(
                    {f"taylor_{kind}": torch.stack(values) for kind, values in sums.items()}, counted, batch_index
                )
                own += counted
                dealer.count(counted)
                bar.update(counted)
            bar.close()
    finally:
        model.train(was_training)
    # Every process adds the shares in rank order, so all of them end with the same sums.
    shares = [share for share in distributed.gather_objects(sharded.per_shard() if own else None) if share is not None]
    if not shares:
        raise ValueError("the batches held no counted tokens: no Taylor statistics were measured")
    per_shard = _sum_shares(shares)
    tokens = int(per_shard["tokens"].sum())
    stats = {
        **profile.stats,
        **{name: value.sum(0) for name, value in per_shard.items() if name != "tokens"},
        "taylor_tokens": np.array(float(tokens)),
    }
    shards = dict(profile.shards)
    if profile.num_shards:
        shards.update({name: value for name, value in per_shard.items() if name != "tokens"})
        shards["taylor_tokens"] = per_shard["tokens"].astype(np.float64)
    return dataclasses.replace(profile, stats=stats, shards=shards, extra={**profile.extra, "taylor_tokens": tokens})
