"""Calibration sensitivity: how much a destination depends on the text the parent was profiled on.

A plan ranks channels, neurons and heads by statistics measured on a small calibration sample; another
sample gives other rankings, and near the cut another destination. :func:`stability` measures how much,
with no second pass over the data: :func:`~subclone_viz.profile.profile` keeps its running sums in shards
(batch b in shard b % S), and :meth:`~subclone_viz.profile.Profile.resample` rebuilds the profile of any
resample of the shards. For each resample it plans the destination and records which residual channels,
FFN neurons (per parent block) and heads (per parent block) are kept; optionally it subclones and scores
the destinations of a few resamples on held-out batches, giving the spread of the loss before training.

Resampling methods: ``"bootstrap"`` (S shards drawn with replacement) and ``"halves"`` (a random half of
the shards each time: the estimate a calibration sample of half the size would give).

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, shuffle=True)
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=1)
    >>> prof = sv.profile(parent, train, max_tokens=512, progress=False)   # 8 shards by default; 8,192 tokens for real use
    >>> spec = sv.DestinationSpec(layers=20, hidden=384, ffn=1024, heads=6, kv_heads=2)
    >>> st = sv.stability(parent, prof, spec, resamples=4, heldout=heldout, loss_resamples=2, max_batches=1)
    >>> st.residual_frequency.shape        # fraction of resamples keeping each residual channel
    (576,)
    >>> sorted(st.summary())               # mean Jaccard overlaps, loss mean and spread
    ['importance', 'loss', 'mean_jaccard_with_full', 'mean_pairwise_jaccard', 'method', 'resamples', ...]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .evaluate import evaluate
from .importance import DEFAULT_ESTIMATOR
from .plan import DestinationSpec, plan
from .subclone import subclone

if TYPE_CHECKING:
    from .parent import Parent
    from .profile import Profile

METHODS = ("bootstrap", "halves")


@dataclass
class Stability:
    """What changes across resamples of the calibration shards, for one destination width."""

    importance: str
    method: str
    spec: dict[str, Any]  # the destination's resolved dims
    shard_tokens: list[int]  # tokens in each shard of the profile
    residual_frequency: np.ndarray  # (d,) fraction of resamples keeping each residual channel
    ffn_frequency: np.ndarray  # (L, ffn) per parent block
    head_frequency: np.ndarray  # (L, heads) per parent block
    residual_jaccard: np.ndarray  # (R,) overlap of each resample's kept channels with the full profile's
    ffn_jaccard: np.ndarray  # (R,) the same for FFN neurons, averaged over parent blocks
    head_jaccard: np.ndarray  # (R,) the same for heads, averaged over parent blocks
    pairwise_jaccard: dict[str, float]  # mean Jaccard overlap between two resamples, per kind
    losses: np.ndarray  # (n,) held-out loss before training of the destinations of the first n resamples
    full_loss: float | None  # the same for the full profile's destination
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def resamples(self) -> int:
        return len(self.residual_jaccard)

    def summary(self) -> dict[str, Any]:
        """Headline figures as JSON-ready values."""
        out: dict[str, Any] = {
            "importance": self.importance,
            "method": self.method,
            "resamples": self.resamples,
            "shard_tokens": list(self.shard_tokens),
            "mean_jaccard_with_full": {
                "residual": float(self.residual_jaccard.mean()),
                "ffn": float(self.ffn_jaccard.mean()),
                "heads": float(self.head_jaccard.mean()),
            },
            "mean_pairwise_jaccard": dict(self.pairwise_jaccard),
            "residual_channels_always_kept": int((self.residual_frequency == 1).sum()),
            "residual_channels_sometimes_kept": int(
                ((self.residual_frequency > 0) & (self.residual_frequency < 1)).sum()
            ),
        }
        if len(self.losses):
            out["loss"] = {
                "full": self.full_loss,
                "mean": float(self.losses.mean()),
                "std": float(self.losses.std(ddof=1)) if len(self.losses) > 1 else 0.0,
                "min": float(self.losses.min()),
                "max": float(self.losses.max()),
                "values": self.losses.round(4).tolist(),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()}


def resample_counts(num_shards: int, nonempty: np.ndarray, method: str, rng: np.random.Generator) -> np.ndarray:
    """One resample's count per shard (S,): a bootstrap over the non-empty shards, or a random half of them."""
    counts = np.zeros(num_shards, dtype=np.int64)
    if method == "bootstrap":
        np.add.at(counts, rng.choice(nonempty, size=len(nonempty), replace=True), 1)
    else:
        counts[rng.choice(nonempty, size=len(nonempty) // 2, replace=False)] = 1
    return counts


def _jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / max(len(a | b), 1)


def _kept_sets(parent: "Parent", profile: "Profile", spec: DestinationSpec, importance: str) -> dict[str, list]:
    """The residual channels and, for every parent block, the FFN neurons and heads a destination of this
    width keeps (planned over all parent blocks, so that depth does not hide any block)."""
    every_block = DestinationSpec(list(range(parent.dims.layers)), spec.hidden, spec.ffn, spec.heads, spec.kv_heads)
    p = plan(parent, profile, every_block, importance=importance)
    return {"residual": p.residual, "ffn": p.ffn, "heads": p.heads}


def _frequency(kept: Iterable[Sequence[int]], size: int) -> np.ndarray:
    counts = np.zeros(size)
    for indices in kept:
        counts[list(indices)] += 1
    return counts


def stability(
    parent: "Parent",
    profile: "Profile",
    spec: DestinationSpec,
    importance: str = DEFAULT_ESTIMATOR,
    resamples: int = 16,
    method: str = "bootstrap",
    seed: int = 0,
    heldout: Iterable[dict[str, torch.Tensor]] | None = None,
    loss_resamples: int = 3,
    max_batches: int | None = 2,
    depth: str | Sequence[int] = "middle",
    scaling: str = "sqrt",
    calibration_batches: Iterable[dict[str, torch.Tensor]] | None = None,
) -> Stability:
    """Selection frequencies, Jaccard overlaps and the held-out loss spread across resamples of the profile.

    Args:
        parent: the profiled parent.
        profile: its profile, with per-shard sums (``sv.profile(..., shards=S)``, S >= 2).
        spec: the destination width (and depth, for the losses).
        importance: the estimator the plans rank by.
        resamples: how many resamples (at least 2).
        method: ``"bootstrap"`` or ``"halves"``.
        seed: seeds the resamples.
        heldout: batches to score destinations on; None skips the losses.
        loss_resamples: score the destinations of this many resamples (each one a subclone and an evaluation).
        max_batches: held-out batches per evaluation.
        depth, scaling: the plan's depth and scaling for the scored destinations.
        calibration_batches: needed by ``scaling="calibrated"``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not a resampling method: choose one of {', '.join(METHODS)}")
    if not isinstance(resamples, (int, np.integer)) or resamples < 2:
        raise ValueError(f"resamples={resamples!r} must be a whole number of at least 2")
    if not isinstance(loss_resamples, (int, np.integer)) or not 0 <= loss_resamples <= resamples:
        raise ValueError(f"loss_resamples={loss_resamples!r} must be between 0 and resamples={resamples}")
    if profile.num_shards == 0:
        raise ValueError(
            "this profile keeps no per-shard sums (saved by an older version): profile again with "
            "sv.profile(parent, batches, shards=8) to measure its stability"
        )
    shard_tokens = profile.shards["tokens"]
    nonempty = np.flatnonzero(shard_tokens)
    if len(nonempty) < 2:
        raise ValueError(
            f"the profile has {len(nonempty)} non-empty shard(s) (shard tokens {shard_tokens.tolist()}): resampling "
            f"needs at least 2; profile more batches or with more shards"
        )
    # Plan the full profile first: a bad spec or estimator fails here, before any resampling.
    full = _kept_sets(parent, profile, spec, importance)
    rng = np.random.default_rng(seed)
    kept = []
    resampled = []
    for _ in range(resamples):
        p = profile.resample(resample_counts(len(shard_tokens), nonempty, method, rng))
        resampled.append(p)
        kept.append(_kept_sets(parent, p, spec, importance))

    dims = parent.dims
    layers = range(dims.layers)
    residual_frequency = _frequency((k["residual"] for k in kept), dims.hidden) / resamples
    ffn_frequency = np.stack([_frequency((k["ffn"][b] for k in kept), dims.ffn) for b in layers]) / resamples
    head_frequency = np.stack([_frequency((k["heads"][b] for k in kept), dims.heads) for b in layers]) / resamples

    def with_full(kind: str) -> np.ndarray:
        if kind == "residual":
            return np.array([_jaccard(k["residual"], full["residual"]) for k in kept])
        return np.array([np.mean([_jaccard(k[kind][b], full[kind][b]) for b in layers]) for k in kept])

    def pairwise(kind: str) -> float:
        values = []
        for i in range(resamples):
            for j in range(i + 1, resamples):
                if kind == "residual":
                    values.append(_jaccard(kept[i]["residual"], kept[j]["residual"]))
                else:
                    values.append(np.mean([_jaccard(kept[i][kind][b], kept[j][kind][b]) for b in layers]))
        return float(np.mean(values))

    losses, full_loss = [], None
    if heldout is not None and loss_resamples > 0:

        def loss_of(prof: "Profile") -> float:
            p = plan(parent, prof, spec, depth=depth, scaling=scaling, importance=importance)
            destination = subclone(parent, p, calibration_batches=calibration_batches)
            return float(evaluate(destination, parent.family, heldout, max_batches=max_batches).loss)

        full_loss = loss_of(profile)
        losses = [loss_of(p) for p in resampled[:loss_resamples]]

    return Stability(
        importance=importance,
        method=method,
        spec=spec.resolve(dims, parent.family.heads_follow_hidden).to_dict(),
        shard_tokens=[int(t) for t in shard_tokens],
        residual_frequency=residual_frequency,
        ffn_frequency=ffn_frequency,
        head_frequency=head_frequency,
        residual_jaccard=with_full("residual"),
        ffn_jaccard=with_full("ffn"),
        head_jaccard=with_full("heads"),
        pairwise_jaccard={kind: pairwise(kind) for kind in ("residual", "ffn", "heads")},
        losses=np.array(losses, dtype=np.float64),
        full_loss=full_loss,
        notes={"seed": seed, "profile_tokens": profile.tokens, "profile_source": profile.source},
    )


__all__ = ["METHODS", "Stability", "resample_counts", "stability"]
