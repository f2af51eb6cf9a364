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

    import subclone_viz as sv
    parent = sv.load_parent("smollm2-135m")
    batches = sv.text_batches("builtin", parent.tokenizer, seq_len=256, batch_size=8, split="heldout")
    prof = sv.profile(parent, batches, max_tokens=8192)
    prof.block_metrics["f_over_sum"]       # (30,) the paper's ||f(x)|| / ||x + f(x)|| per block
    prof.shared_ranking()[:5]               # the five most important residual channels
    prof.rank_consistency().spearman        # (31, 31) Spearman correlation between residual layers
    prof.save("profile.npz")
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from . import __version__
from .capture import BlockStep, capture_blocks, counted_rows, to_device, token_mask

if TYPE_CHECKING:
    from .parent import Parent

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
        """Write one ``.npz`` file: the sums as arrays and the metadata as a JSON string (no pickles)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"profile path {str(path)!r} must end in .npz")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        meta = dict(parent=self.parent, source=self.source, tokens=self.tokens, version=self.version, extra=self.extra)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
            np.savez(
                tmp,
                meta=np.array(json.dumps(meta)),
                block_sums=self.block_sums,
                residual_abs_sums=self.residual_abs_sums,
                ffn_abs_sums=self.ffn_abs_sums,
                attn_abs_sums=self.attn_abs_sums,
            )
        os.replace(tmp.name, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no profile at {path}")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums")}
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
    """What identifies a parent: its name, family, shape and a sample of its first block's weights."""
    block = parent.family.blocks(parent.model)[0]
    checksum = [round(float(v), 6) for p in block.parameters() for v in p.detach().flatten()[:4].float().cpu()]
    return {
        "name": parent.name,
        "family": parent.family.name,
        "class": type(parent.model).__name__,
        "dims": parent.dims.to_dict(),
        "description": parent.description,
        "checksum": checksum,
    }


def same_parent(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # The tolerance absorbs the same weights held in another dtype (bf16 on GPU, fp32 on CPU).
    return (
        a["family"] == b["family"]
        and a["dims"] == b["dims"]
        and len(a["checksum"]) == len(b["checksum"])
        and bool(np.allclose(a["checksum"], b["checksum"], rtol=1e-2, atol=1e-3))
    )


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
        x = self._rows(step.input)
        if i == 0:
            self.batch_tokens = x.shape[0]
            self._add(self.residual, 0, x.abs().sum(0))
        total = self._rows(step.total)  # x + f(x), pre-norm sum for post-norm blocks
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
    tokens = 0
    hooks = dict(on_block=acc.on_block, on_ffn=acc.on_ffn, on_attention=acc.on_attention)
    try:
        with capture_blocks(parent.family, model, **hooks):
            bar = tqdm(total=max_tokens, unit="tok", desc="profile", disable=not progress, leave=False)
            for batch in batches:
                acc.mask = token_mask(batch)
                parent.family.logits(model, to_device(batch, parent.input_device))
                tokens += acc.batch_tokens
                bar.update(acc.batch_tokens)
                if max_tokens is not None and tokens >= max_tokens:
                    break
            bar.close()
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("the batches held no counted tokens: nothing was profiled")
    return Profile(
        parent=parent_fingerprint(parent),
        source=source or getattr(batches, "description", type(batches).__name__),
        tokens=tokens,
        block_sums=_stack(acc.block_sums),
        residual_abs_sums=_stack(acc.residual),
        ffn_abs_sums=_stack(acc.ffn),
        attn_abs_sums=_stack(acc.attn),
    )


def _stack(values: list[torch.Tensor | None]) -> np.ndarray:
    if any(v is None for v in values):
        raise RuntimeError("a profiling hook never fired: the model's forward skipped a block")
    return torch.stack([v.cpu() for v in values]).numpy()
