"""Calibration sensitivity: how much a destination depends on the text the parent was profiled on.

A plan ranks channels, neurons and heads by statistics measured on a small calibration sample; another
sample gives other rankings, and near the cut another destination. :func:`stability` measures how much,
with no second pass over the data: :func:`~subclone_viz.profile.profile` keeps its running sums in shards
(batch b in shard b % S), and :meth:`~subclone_viz.profile.Profile.resample` rebuilds the profile of any
resample of the shards. For each resample it plans the destination and records which residual channels,
FFN neurons (per parent block) and heads (per parent block) are kept, and for a mixture of experts which
experts each MoE block keeps and which neurons of each kept expert; optionally it subclones and scores
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
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .evaluate import evaluate
from .experts import DEFAULT_EXPERT_ESTIMATOR
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
    # Mixtures of experts (None for dense parents): the same for the experts kept in each MoE block and the
    # neurons of each kept expert (its overlap counted where both selections keep that expert).
    expert_frequency: np.ndarray | None = None  # (L, E) per parent block; dense blocks' rows are 0
    expert_ffn_frequency: np.ndarray | None = None  # (L, E, expert_ffn)
    expert_jaccard: np.ndarray | None = None  # (R,) averaged over MoE blocks
    expert_ffn_jaccard: np.ndarray | None = None  # (R,) averaged over (block, expert) both keep

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
                **self._expert_means(),
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

    def _expert_means(self) -> dict[str, float]:
        """The experts' and expert neurons' mean overlaps with the full profile's (nothing for a dense parent)."""
        kinds = {"experts": self.expert_jaccard, "expert_ffn": self.expert_ffn_jaccard}
        return {kind: float(np.nanmean(values)) for kind, values in kinds.items() if values is not None}

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


# What one plan keeps, per kind: unit -> the indices kept there. Units: None (the residual stream), a parent
# block (FFN neurons, heads, experts) or a (block, parent expert) pair (that expert's neurons).
Kept = dict[str, dict[Any, Sequence[int]]]


def _kept_sets(parent: "Parent", profile: "Profile", spec: DestinationSpec, importance: str, experts_by: str) -> Kept:
    """The residual channels and, for every parent block, the FFN neurons and heads a destination of this
    width keeps (planned over all parent blocks, so that depth does not hide any block); for a mixture of
    experts also the experts of every MoE block and the neurons of each kept expert."""
    every_block = replace(spec, layers=list(range(parent.dims.layers)))
    p = plan(parent, profile, every_block, importance=importance, experts_by=experts_by)
    kept: Kept = {"residual": {None: p.residual}, "ffn": dict(enumerate(p.ffn)), "heads": dict(enumerate(p.heads))}
    if p.experts:
        moe = np.flatnonzero(profile.stats["router_tokens"] > 0)  # dense blocks of an MoE parent keep no experts
        kept["experts"] = {int(b): p.experts[b] for b in moe}
        kept["expert_ffn"] = {(int(b), e): n for b in moe for e, n in zip(p.experts[b], p.expert_ffn[b])}
    return kept


def _frequency(kept: Iterable[Sequence[int]], size: int) -> np.ndarray:
    counts = np.zeros(size)
    for indices in kept:
        counts[list(indices)] += 1
    return counts


def _mean_jaccard(a: dict[Any, Sequence[int]], b: dict[Any, Sequence[int]]) -> float:
    """Mean Jaccard overlap over the units both selections have (for expert neurons: the experts both keep)."""
    shared = [unit for unit in a if unit in b]
    return float(np.mean([_jaccard(a[u], b[u]) for u in shared])) if shared else float("nan")


def _frequencies(kept: list[Kept], dims: Any) -> dict[str, np.ndarray]:
    """Fraction of resamples keeping each channel, neuron, head (per parent block) and, for a mixture of
    experts, each expert (L, E) and each expert neuron (L, E, F)."""
    blocks, count = range(dims.layers), len(kept)
    out = {
        "residual_frequency": _frequency((k["residual"][None] for k in kept), dims.hidden) / count,
        "ffn_frequency": np.stack([_frequency((k["ffn"][b] for k in kept), dims.ffn) for b in blocks]) / count,
        "head_frequency": np.stack([_frequency((k["heads"][b] for k in kept), dims.heads) for b in blocks]) / count,
    }
    if "experts" in kept[0]:
        experts, neurons = np.zeros((dims.layers, dims.experts)), np.zeros((dims.layers, dims.experts, dims.expert_ffn))
        for k in kept:
            for b, chosen in k["experts"].items():
                experts[b, list(chosen)] += 1
            for (b, e), n in k["expert_ffn"].items():
                neurons[b, e, list(n)] += 1
        out["expert_frequency"], out["expert_ffn_frequency"] = experts / count, neurons / count
    return out


def _overlaps(kept: list[Kept], full: Kept) -> dict[str, Any]:
    """Per kind: each resample's mean Jaccard overlap with the full profile's selection (R,), and the mean
    overlap between two resamples."""
    pairs = [(i, j) for i in range(len(kept)) for j in range(i + 1, len(kept))]
    with_full = {kind: np.array([_mean_jaccard(k[kind], full[kind]) for k in kept]) for kind in full}
    pairwise = {
        kind: float(np.nanmean([_mean_jaccard(kept[i][kind], kept[j][kind]) for i, j in pairs])) for kind in full
    }
    return {"with_full": with_full, "pairwise": pairwise}


def _check_arguments(profile: "Profile", method: str, resamples: int, loss_resamples: int) -> np.ndarray:
    """The profile's non-empty shards, once the resampling asked for is possible on it."""
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
    return nonempty


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
    experts_by: str = DEFAULT_EXPERT_ESTIMATOR,
) -> Stability:
    """Selection frequencies, Jaccard overlaps and the held-out loss spread across resamples of the profile.

    Args:
        parent: the profiled parent.
        profile: its profile, with per-shard sums (``sv.profile(..., shards=S)``, S >= 2).
        spec: the destination width (and depth, for the losses; for a mixture of experts the experts kept and
            their width).
        importance: the estimator the plans rank by.
        resamples: how many resamples (at least 2).
        method: ``"bootstrap"`` or ``"halves"``.
        seed: seeds the resamples.
        heldout: batches to score destinations on; None skips the losses.
        loss_resamples: score the destinations of this many resamples (each one a subclone and an evaluation).
        max_batches: held-out batches per evaluation.
        depth, scaling: the plan's depth and scaling for the scored destinations.
        calibration_batches: needed by ``scaling="calibrated"``.
        experts_by: for a mixture of experts, the expert-selection estimator the plans keep experts by.
    """
    nonempty = _check_arguments(profile, method, resamples, loss_resamples)
    shard_tokens = profile.shards["tokens"]
    # Plan the full profile first: a bad spec or estimator fails here, before any resampling.
    full = _kept_sets(parent, profile, spec, importance, experts_by)
    rng = np.random.default_rng(seed)
    resampled = [profile.resample(resample_counts(len(shard_tokens), nonempty, method, rng)) for _ in range(resamples)]
    kept = [_kept_sets(parent, p, spec, importance, experts_by) for p in resampled]
    overlaps = _overlaps(kept, full)
    losses, full_loss = [], None
    if heldout is not None and loss_resamples > 0:

        def loss_of(prof: "Profile") -> float:
            p = plan(parent, prof, spec, depth=depth, scaling=scaling, importance=importance, experts_by=experts_by)
            destination = subclone(parent, p, calibration_batches=calibration_batches)
            return float(evaluate(destination, parent.family, heldout, max_batches=max_batches).loss)

        full_loss = loss_of(profile)
        losses = [loss_of(p) for p in resampled[:loss_resamples]]
    with_full = overlaps["with_full"]
    return Stability(
        importance=importance,
        method=method,
        spec=spec.resolve(parent.dims, parent.family.heads_follow_hidden).to_dict(),
        shard_tokens=[int(t) for t in shard_tokens],
        **_frequencies(kept, parent.dims),
        residual_jaccard=with_full["residual"],
        ffn_jaccard=with_full["ffn"],
        head_jaccard=with_full["heads"],
        expert_jaccard=with_full.get("experts"),
        expert_ffn_jaccard=with_full.get("expert_ffn"),
        pairwise_jaccard=overlaps["pairwise"],
        losses=np.array(losses, dtype=np.float64),
        full_loss=full_loss,
        notes={"seed": seed, "profile_tokens": profile.tokens, "profile_source": profile.source},
    )


__all__ = ["METHODS", "Stability", "resample_counts", "stability"]
