"""Importance estimators: how a profile's statistics become the rankings a plan keeps.

A plan needs three rankings: one shared ranking of the residual channels, and per block a ranking of the
FFN hidden neurons and of the attention heads (method.md, section 2). The paper scores every one by its
mean |activation|; other work scores them differently. Each estimator here is a named function of a
:class:`~subclone_viz.profile.Profile` (and, for the weight-aware one, the parent's weights) that returns an
:class:`Importance`; ``plan(..., importance=NAME)`` ranks by it.

=================== ============================================================================================
``paper``           mean |activation| summed over the residual layers (embedding output, every block output);
                    FFN neurons by mean |activation|; heads by the mean of their channels' mean |output|.
``layer_normalized`` the paper's, with each residual layer's importance vector divided by its sum before the
                    sum over layers, so that the few layers with massive activations do not decide alone.
``norm_input``      the residual ranking from the inputs of every norm that reads or writes the residual stream
                    (per block before attention and before the MLP, and the final norm): the paper's layers plus
                    the mid-block sums x + attn(x).
``norm_output``     Minitron's (Muralidharan et al., 2024): the residual ranking from the norms' *outputs*
                    (normalized per token, times the norm's weight); heads by the mean L2 norm of their output.
``weight_aware``    Wanda-style (Sun et al., 2023): a channel that a linear layer reads scores
                    sum_out |W[out, j]| * RMS(x_j) over every linear layer reading it (q/k/v/gate/up and the head
                    for the residual; the down projection for FFN neurons; the output projection for heads).
``taylor``          first-order Taylor (Molchanov et al., 2019): |sum over tokens of activation * dLoss/d
                    activation|, per residual layer summed over layers, per FFN neuron, per head. Needs a
                    backward pass: :func:`~subclone_viz.profile.add_taylor`.
=================== ============================================================================================

All but ``taylor`` read statistics that :func:`~subclone_viz.profile.profile` collects in its one streaming
pass. Every estimator is deterministic: the same profile gives the same rankings.

:data:`ESTIMATORS` is an open registry: :func:`register_estimator` adds an :class:`Estimator` (a plugin package
declares it under the entry-point group ``subclone_viz.estimators``). An estimator declares the running sums
it needs (``collects``: :class:`~subclone_viz.capture.RunningSums` subclasses such as :class:`NormSums`), and
the profiler collects what the registered estimators declare without knowing any of them by name.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, shuffle=True)
    >>> prof = sv.profile(parent, batches, max_tokens=512, progress=False)    # 8,192 tokens or more for real use
    >>> sv.estimate_importance(prof, parent, "layer_normalized").residual.shape   # one score per channel
    (576,)
    >>> sv.plan(parent, prof, sv.DestinationSpec(layers=20, hidden=384), importance="layer_normalized").summary()
    '20 layers ... width=importance (layer_normalized), scaling=sqrt'
    >>> list(sv.ESTIMATORS)                                                     # the registry's names
    ['paper', 'layer_normalized', 'norm_input', 'norm_output', 'weight_aware', 'taylor']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .capture import RunningSums
from .choices import DEFAULT_ESTIMATOR
from .errors import ConfigurationError
from .registry import Registry

if TYPE_CHECKING:
    from .parent import Parent
    from .profile import Profile


@dataclass(frozen=True)
class Importance:
    """The scores a plan ranks by (higher keeps first)."""

    residual: np.ndarray  # (d,) one score per residual channel, shared by every layer
    ffn: np.ndarray  # (L, ffn) per block
    heads: np.ndarray  # (L, heads) per block, query heads


SumsFactory = Callable[["Parent", Callable[[torch.Tensor], torch.Tensor]], RunningSums]


@dataclass(frozen=True)
class Estimator:
    """A named importance estimator: the running sums it needs, what it reads and how it scores.

    Attributes:
        name: what ``plan(..., importance=NAME)`` calls it.
        description: one line for listings.
        needs: the keys of ``Profile.stats`` it reads.
        score: (profile, parent or None) -> :class:`Importance`.
        collects: the running sums :func:`~subclone_viz.profile.profile` must collect for it in its one pass:
            factories ``(parent, rows) -> RunningSums`` (a :class:`~subclone_viz.capture.RunningSums` subclass
            is one). Empty when ``needs`` come from elsewhere (``taylor``'s from ``add_taylor``).
        needs_weights: it scores the parent's weights too (``estimate_importance`` then needs the parent).
        pass_hint: what to do when a profile lacks its statistics.
    """

    name: str
    description: str
    needs: tuple[str, ...]
    score: Callable[["Profile", "Parent | None"], Importance]
    collects: tuple[SumsFactory, ...] = ()
    needs_weights: bool = False
    pass_hint: str = "profile the parent again with this version's sv.profile(parent, batches)"


@dataclass(frozen=True)
class LinearReader:
    """A linear layer that reads an axis (residual, FFN or heads): its module, weight and fan-in axis."""

    module: str
    block: int | None
    weight: torch.Tensor
    fan_in_axis: int

    def column_abs_sums(self) -> np.ndarray:
        """sum over outputs of |W[out, j]| for each input channel j, (fan_in,)."""
        w = self.weight.detach().float().abs().movedim(self.fan_in_axis, 0)
        return w.reshape(w.shape[0], -1).sum(1).cpu().double().numpy()


def linear_readers(parent: "Parent", axis: str) -> list[LinearReader]:
    """Every linear layer whose fan-in is ``axis`` ("residual", "ffn" or "q_heads"), in parameter order.

    Tied weights are listed under each module that uses them (a tied LM head reads the residual stream too).
    """
    family = parent.family
    readers = []
    for name, weight in parent.model.named_parameters(remove_duplicate=False):
        if not name.endswith(".weight"):
            continue
        info = family.param_info(name)
        fan_in = info.rule.fan_in_axis
        if fan_in is not None and info.rule.axes[fan_in] == axis:
            readers.append(LinearReader(name[: -len(".weight")], info.block, weight, fan_in))
    return readers


def estimate_importance(
    profile: "Profile", parent: "Parent | None" = None, importance: str = DEFAULT_ESTIMATOR
) -> Importance:
    """The scores of estimator ``importance`` on ``profile``; a clear error when its statistics are missing."""
    estimator = get_estimator(importance)
    missing = [name for name in estimator.needs if name not in profile.stats]
    if missing:
        raise ValueError(
            f"importance={importance!r} needs the profile statistics {missing}, which this profile lacks: "
            f"{estimator.pass_hint}"
        )
    if estimator.needs_weights and parent is None:
        raise ValueError(f"importance={importance!r} scores weights too: pass the parent")
    return estimator.score(profile, parent)


def available_estimators(profile: "Profile") -> list[str]:
    """The estimators whose statistics ``profile`` holds (``taylor`` only after ``add_taylor``)."""
    return [name for name, e in ESTIMATORS.items() if all(key in profile.stats for key in e.needs)]


def get_estimator(name: str) -> Estimator:
    """The registered estimator ``name``; an unknown name is a ConfigurationError listing the registered ones."""
    if name not in ESTIMATORS:
        raise ConfigurationError(
            f"importance={name!r} is not an importance estimator: choose one of {', '.join(ESTIMATORS)}"
        )
    return ESTIMATORS[name]


def _check_estimator(name: str, estimator: object) -> None:
    if not isinstance(estimator, Estimator):
        raise TypeError(f"importance estimator {name!r}: expected an importance.Estimator, got {estimator!r}")
    if estimator.name != name:
        raise TypeError(f"the estimator named {estimator.name!r} cannot be registered as {name!r}")


# Every estimator, by name; plugin packages add theirs under the entry-point group subclone_viz.estimators
# (each entry point an Estimator).
ESTIMATORS: Registry[Estimator] = Registry("importance estimator", "subclone_viz.estimators", check=_check_estimator)


def register_estimator(estimator: Estimator, replace: bool = False) -> Estimator:
    """Add ``estimator`` to :data:`ESTIMATORS`: plans can rank by it, and :func:`~subclone_viz.profile.profile`
    collects the running sums it declares in ``collects``."""
    return ESTIMATORS.register(estimator.name, estimator, replace=replace)


def sums_collected_for(estimators: Iterable[Estimator]) -> list[SumsFactory]:
    """The running-sum factories the given estimators declare, each once, in order."""
    factories: list[SumsFactory] = []
    for estimator in estimators:
        factories += [factory for factory in estimator.collects if factory not in factories]
    return factories


# ------------------------------------------------------------------------------------- running sums


class NormSums(RunningSums):
    """``norm_in_abs`` / ``norm_out_abs`` (N, d): sums of |input| and |output| of every norm on the residual
    stream (recorded as ``extra["norms"]``)."""

    def __init__(self, parent: "Parent", rows: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(rows)
        model, family = parent.model, parent.family
        named = [(name, module) for name, module in model.named_modules() if residual_norm(family, name, module)]
        self.norms = [name for name, _ in named]
        self.modules = dict(named)
        self._index = {name: n for n, name in enumerate(self.norms)}
        self.stores = {"norm_in_abs": [None] * len(self.norms), "norm_out_abs": [None] * len(self.norms)}

    def on_module(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        n = self._index[name]
        self.add("norm_in_abs", n, self.rows.abs_sum(x))
        self.add("norm_out_abs", n, self.rows.abs_sum(y))

    def metadata(self) -> dict[str, Any]:
        return {"norms": self.norms}


class ResidualReaderSums(RunningSums):
    """``residual_in_sq`` (M, d) and ``residual_in_rows`` (M,): squared inputs of every linear layer whose fan-in
    is the residual stream, and how many rows it read (a classifier head reads one row per image); the layers
    are recorded as ``extra["residual_readers"]``."""

    inputs_only = True  # reads its layers' inputs only: a profile may stop the forward as the LM head is called

    def __init__(self, parent: "Parent", rows: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(rows)
        self.readers = [r.module for r in linear_readers(parent, "residual")]
        modules = dict(parent.model.named_modules())
        self.modules = {name: modules[name] for name in self.readers}
        self._index = {name: m for m, name in enumerate(self.readers)}
        self.stores = {"residual_in_sq": [None] * len(self.readers), "residual_in_rows": [None] * len(self.readers)}
        self._counts: dict[tuple[int, torch.device], torch.Tensor] = {}  # row count -> it as a tensor, made once

    def on_module(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        sq, rows = self.rows.square_sum(x)  # q, k and v read one tensor: summed once
        m = self._index[name]
        self.add("residual_in_sq", m, sq)
        count = self._counts.get((rows, sq.device))
        if count is None:
            count = self._counts[rows, sq.device] = torch.tensor(float(rows), dtype=torch.float64, device=sq.device)
        self.add("residual_in_rows", m, count)

    def metadata(self) -> dict[str, Any]:
        return {"residual_readers": self.readers}


class ChannelSquareSums(RunningSums):
    """``ffn_in_sq`` (L, ffn) and ``attn_in_sq`` (L, heads * head_dim): squared FFN activations and head outputs."""

    def __init__(self, parent: "Parent", rows: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(rows)
        self.stores = {"ffn_in_sq": [None] * parent.dims.layers, "attn_in_sq": [None] * parent.dims.layers}

    def on_ffn(self, i: int, activation: torch.Tensor) -> None:
        self.add("ffn_in_sq", i, self.rows.square_sum(activation)[0])

    def on_attention(self, i: int, per_head: torch.Tensor) -> None:
        self.add("attn_in_sq", i, self.rows.square_sum(per_head)[0])


class HeadNormSums(RunningSums):
    """``head_norm`` (L, heads): sums over tokens of each head output's L2 norm."""

    def __init__(self, parent: "Parent", rows: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(rows)
        self.heads = parent.dims.heads
        self.stores = {"head_norm": [None] * parent.dims.layers}

    def on_attention(self, i: int, per_head: torch.Tensor) -> None:
        counted = self.rows(per_head)  # (N, heads * head_dim)
        self.add("head_norm", i, counted.reshape(counted.shape[0], self.heads, -1).norm(dim=-1).sum(0))  # (heads,)


def residual_norm(family, name: str, module: nn.Module) -> bool:
    """Whether ``module`` is a norm whose weight lives on the residual stream (LayerNorm, RMSNorm, their kin)."""
    weight = getattr(module, "weight", None)
    if "norm" not in type(module).__name__.lower() or not isinstance(weight, nn.Parameter):
        return False
    try:
        return family.rule_for(f"{name}.weight").axes == ("residual",)
    except ValueError:  # a norm the adapter does not slice (per-head q/k norms have their own rule)
        return False


# ------------------------------------------------------------------------------------------------ estimators


def _per_token(profile: "Profile", name: str) -> np.ndarray:
    return profile.stats[name] / max(profile.tokens, 1)


def _paper(profile: "Profile", parent: "Parent | None") -> Importance:
    return Importance(profile.residual_importance.sum(0), profile.ffn_importance, profile.head_importance)


def _layer_normalized(profile: "Profile", parent: "Parent | None") -> Importance:
    per_layer = profile.residual_importance  # (L+1, d)
    shares = per_layer / np.maximum(per_layer.sum(1, keepdims=True), np.finfo(np.float64).tiny)
    return Importance(shares.sum(0), profile.ffn_importance, profile.head_importance)


def _norm_input(profile: "Profile", parent: "Parent | None") -> Importance:
    return Importance(_per_token(profile, "norm_in_abs").sum(0), profile.ffn_importance, profile.head_importance)


def _norm_output(profile: "Profile", parent: "Parent | None") -> Importance:
    return Importance(
        _per_token(profile, "norm_out_abs").sum(0), profile.ffn_importance, _per_token(profile, "head_norm")
    )


def _rms(sq_sums: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.sqrt(sq_sums / np.maximum(rows, 1)[..., None])


def _weight_aware(profile: "Profile", parent: "Parent | None") -> Importance:
    residual_readers = linear_readers(parent, "residual")
    names = [r.module for r in residual_readers]
    if names != profile.extra.get("residual_readers"):
        raise ValueError(
            "the profile's residual readers do not match this parent's linear layers: profile this parent again"
        )
    rms = _rms(profile.stats["residual_in_sq"], profile.stats["residual_in_rows"])  # (M, d)
    residual = sum(r.column_abs_sums() * rms[m] for m, r in enumerate(residual_readers))
    ffn_columns = np.stack([r.column_abs_sums() for r in _one_per_block(parent, "ffn")])  # (L, ffn)
    ffn = ffn_columns * np.sqrt(_per_token(profile, "ffn_in_sq"))
    head_columns = np.stack([r.column_abs_sums() for r in _one_per_block(parent, "q_heads")])  # (L, heads*hd)
    per_channel = head_columns * np.sqrt(_per_token(profile, "attn_in_sq"))
    heads = per_channel.reshape(profile.num_layers, profile.heads, -1).sum(-1)
    return Importance(residual, ffn, heads)


def _one_per_block(parent: "Parent", axis: str) -> list[LinearReader]:
    readers = [r for r in linear_readers(parent, axis) if r.block is not None]
    if [r.block for r in readers] != list(range(parent.dims.layers)):
        raise ValueError(f"{parent.family.name}: expected one linear layer reading {axis!r} per block")
    return readers


def _taylor(profile: "Profile", parent: "Parent | None") -> Importance:
    tokens = max(int(profile.stats["taylor_tokens"]), 1)
    residual = np.abs(profile.stats["taylor_residual"] / tokens).sum(0)  # (d,)
    ffn = np.abs(profile.stats["taylor_ffn"] / tokens)
    per_head = profile.stats["taylor_attn"].reshape(profile.num_layers, profile.heads, -1).sum(-1)
    return Importance(residual, ffn, np.abs(per_head / tokens))


for _estimator in (
    Estimator("paper", "mean |activation| summed over residual layers (the paper)", (), _paper),
    Estimator(
        "layer_normalized", "each residual layer's importance normalized to sum 1 before the sum", (), _layer_normalized
    ),
    Estimator(
        "norm_input",
        "mean |input| of every norm on the residual stream",
        ("norm_in_abs",),
        _norm_input,
        collects=(NormSums,),
    ),
    Estimator(
        "norm_output",
        "mean |output| of every norm, heads by output L2 norm (Minitron)",
        ("norm_out_abs", "head_norm"),
        _norm_output,
        collects=(NormSums, HeadNormSums),
    ),
    Estimator(
        "weight_aware",
        "|W| times the RMS of the input channel, summed over the layers reading it (Wanda)",
        ("residual_in_sq", "residual_in_rows", "ffn_in_sq", "attn_in_sq"),
        _weight_aware,
        collects=(ResidualReaderSums, ChannelSquareSums),
        needs_weights=True,
    ),
    Estimator(
        "taylor",
        "|activation x gradient| summed over tokens (first-order Taylor; a backward pass)",
        ("taylor_residual", "taylor_ffn", "taylor_attn", "taylor_tokens"),
        _taylor,
        pass_hint="run prof = sv.add_taylor(prof, parent, batches) first (a pass with gradients)",
    ),
):
    register_estimator(_estimator)
