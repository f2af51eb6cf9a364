"""Figures of subcloning: records in, figures out, interactive (plotly) or static (matplotlib).

Every function takes plain records (a :class:`~subclone_viz.Profile`, a block ablation, a token trace, training
histories, a size grid) and ``backend="plotly"`` (the default: a ``plotly.graph_objects.Figure``, which a
widget can wrap in a ``go.FigureWidget``) or ``backend="matplotlib"`` (a ``matplotlib.figure.Figure``, made
without pyplot so nothing global changes). No model runs here.

* :func:`residual_ratio`: the additive residual property per block, kept and removed blocks marked;
* :func:`block_ablation`: held-out loss with each block removed or duplicated (the paper's Fig. 2, bottom);
* :func:`channel_heatmap`, :func:`massive_activations`, :func:`rank_consistency`: why one ranking of the
  residual channels serves every layer;
* :func:`ffn_importance`, :func:`head_importance`: the per-layer rankings of FFN neurons and heads;
* :func:`selection_stability`: how often each channel, FFN neuron or head is kept across resamples of the
  calibration data (from :func:`~subclone_viz.stability.stability`);
* :func:`token_trace`: one token's hidden state through depth;
* :func:`loss_curves`: training histories, one line per initialization;
* :func:`size_grid`: parameters, FLOPs per token, latency, memory or untrained loss over a grid of
  destination sizes; :func:`size_pareto`: loss against one cost, the Pareto front highlighted;
* :func:`speedup_by_size`: the speedup study, speedup over random init against destination size;
* :func:`placeholder`: a titled figure that says what will be drawn once there is data.
* :func:`lens_loss`, :func:`predictions_through_depth`: the logit lens of a parent and its destinations;
  :func:`similarity_heatmap`, :func:`similarity_by_layer`: where a destination's hidden states part from the
  parent's; :func:`token_loss_html`: text coloured by per-token loss difference; :func:`image_predictions`:
  predicted class and confidence of each model on a few images.
* :func:`expert_load_heatmap`, :func:`expert_neuron_curves`: a mixture of experts' routing load per layer and
  expert, and each expert's neuron importance.
* :func:`forecast_band`: a run's held-out losses and its loss forecast ahead, with the interval as a band
  (:func:`forecast_band_curves`: its curves' data alone, for a live figure);
  :func:`budget_pareto`: forecast loss at a training budget against one inference cost, with error bars.

Heat maps put residual layer 0 (the embedding output) or block 0 at the bottom, so depth grows upward.

Example::

    >>> import subclone_viz as sv
    >>> from subclone_viz import plots
    >>> parent = sv.load_parent("smollm2-135m")
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, split="heldout")
    >>> prof = sv.profile(parent, heldout, max_tokens=512, progress=False)
    >>> p = sv.plan(parent, prof, sv.DestinationSpec(layers=20, hidden=384))
    >>> plots.residual_ratio(prof, kept_layers=p.layers).write_html("residual.html")   # interactive (or .show())
    >>> plots.channel_heatmap(prof, backend="matplotlib").savefig("channels.png")       # static
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from matplotlib.figure import Figure as MatplotlibFigure
from matplotlib.patches import Rectangle
from matplotlib.ticker import AutoLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from plotly.subplots import make_subplots

from .budget import BudgetGrid
from .experts import expert_load, expert_neuron_importance, router_entropy
from .lens import through_depth
from .profile import BLOCK_METRIC_LABELS, BLOCK_METRICS, Profile
from .sizing import ACTIVE_PARAMS, GRID_COSTS, QUANTITIES, SizeGrid
from .train import History

if TYPE_CHECKING:
    from .lens import LogitLens
    from .outputs import TokenLosses
    from .similarity import LayerSimilarity
    from .stability import Stability
    from .trace import TokenTrace

Figure = go.Figure | MatplotlibFigure
BACKENDS = ("plotly", "matplotlib")
METRIC_COLORS = {"f_over_sum": "#1f77b4", "f_over_x": "#ff7f0e", "one_minus_cos": "#2ca02c"}
REMOVED_COLOR = "#b8b8b8"
SELECTED_COLOR = "#d62728"
SERIES_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
MATPLOTLIB_COLORMAPS = {SEQUENTIAL: "viridis", DIVERGING: "RdBu_r"}
MATPLOTLIB_SIZE = (7.5, 4.2)  # inches
PLOTLY_HEIGHT = 430  # pixels
RESIDUAL_LAYER_AXIS = "residual layer (0 = embedding output)"
HISTORY_METRICS = {
    "eval_loss": "held-out loss (nats)",
    "train_loss": "training loss (nats)",
    "eval_accuracy": "held-out accuracy (fraction correct)",
}
GRID_LABELS = {
    "loss": "held-out loss before training (nats)",
    "params": "parameters",
    "flops_per_token": "forward FLOPs per token",
    "latency": "forward latency per token (ms)",
    "memory": "peak inference memory (MiB)",
    "active_params": "active parameters per token",
}
GRID_TITLES = {
    "loss": "Held-out loss before training",
    "params": "Parameters",
    "flops_per_token": "Forward FLOPs per token",
    "latency": "Measured forward latency per token",
    "memory": "Measured peak inference memory",
    "active_params": "Active parameters per token",
}
# A size grid's axes as its heat maps label them (a mixture of experts' grid may vary the experts kept).
GRID_AXIS_LABELS = {"layers": "blocks", "hidden": "hidden width d'", "experts": "routed experts kept per layer"}
# Measured quantities are stored in seconds and bytes and drawn in these units.
GRID_UNITS = {"latency": 1e3, "memory": 1 / 2**20}
FRONT_COLOR = SELECTED_COLOR


# --------------------------------------------------------------------------------------------------------
# Shared styling


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not a plotting backend: choose one of {', '.join(BACKENDS)}")


def _plotly_figure(title: str, xlabel: str, ylabel: str, height: int = PLOTLY_HEIGHT) -> go.Figure:
    fig = go.Figure()
    _style_plotly(fig, title, height)
    fig.update_xaxes(title_text=xlabel)
    fig.update_yaxes(title_text=ylabel)
    return fig


def _style_plotly(fig: go.Figure, title: str, height: int) -> None:
    # Assigning a template re-validates its ~2,000 properties (about 40 ms, most of a widget's redraw). plotly_white
    # is plotly's own registered template, valid as shipped: attach it the way plotly attaches its default one
    # (BaseFigure._initialize_layout_template), without validation; what is stored is a copy.
    fig.layout._validate = False
    try:
        fig.layout.template = pio.templates["plotly_white"]
    finally:
        fig.layout._validate = True
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)),
        height=height,
        margin=dict(l=70, r=30, t=70, b=55),
        font=dict(size=13),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        hoverlabel=dict(namelength=-1),
    )


def _note(fig: go.Figure, text: str) -> None:
    """A grey sentence across the middle of ``fig``, its axes hidden: what is drawn here once there is data."""
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15, color="#777777")
    )


def placeholder(title: str, message: str, height: int = PLOTLY_HEIGHT, backend: str = "plotly") -> Figure:
    """A figure with nothing to show yet: ``title``, and ``message`` where the data will be (no empty axes).

    >>> placeholder("Training loss", "press Train to start").layout.annotations[0].text
    'press Train to start'
    """
    _check_backend(backend)
    if backend == "plotly":
        fig = go.Figure()
        _style_plotly(fig, title, height)
        _note(fig, message)
        return fig
    fig = MatplotlibFigure(figsize=MATPLOTLIB_SIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#777777", transform=ax.transAxes)
    fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig


def _matplotlib_figure(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = MATPLOTLIB_SIZE):
    fig = MatplotlibFigure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    _style_axes(ax, xlabel, ylabel)
    fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig, ax


def _style_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    # Blocks, layers, steps, heads and ranks are counts: no tick at 0.5.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def log_ticks(values: Any) -> list[float]:
    """Where a log axis over ``values`` puts its labels: 1 to 9 in each decade when the data spans less than
    one, 1, 2 and 5 up to three decades, one per decade (or every few) beyond. Plotly's own log axis labels
    its minor ticks too ("9 8 7 ... 0.1 9 8"), which crowd a small figure.

    >>> log_ticks([0.22, 0.35])
    [0.2, 0.3, 0.4]
    >>> log_ticks([0.01, 0.5])
    [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
    >>> log_ticks([1e-3, 1e4])
    [0.001, 0.1, 10.0, 1000.0]
    """
    data = np.asarray(values, dtype=float).ravel()
    data = data[np.isfinite(data) & (data > 0)]
    if data.size == 0:
        return []
    low, high = float(data.min()), float(data.max())
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    span = math.log10(high / low)
    mantissas = range(1, 10) if span < 1 else (1, 2, 5) if span <= 3 else (1,)
    stride = max(1, math.ceil((last - first) / 6)) if span > 3 else 1
    ticks = [float(f"{m * 10.0**e:.6g}") for e in range(first, last + 1, stride) for m in mantissas]
    # One tick on either side of the data, so that a narrow range still gets a labelled bracket.
    below = [t for t in ticks if t <= low][-1:]
    above = [t for t in ticks if t >= high][:1]
    return below + [t for t in ticks if low < t < high] + above


def _log_axis(fig: go.Figure, values: Any, **where: Any) -> None:
    """Make ``fig``'s y axis logarithmic, labelled at :func:`log_ticks` of ``values`` only."""
    ticks = log_ticks(values)
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], **where)


def _block_axis(fig: go.Figure, count: int, **where: Any) -> None:
    """An x axis of ``count`` blocks or layers: exactly their range (not -2 to 31), upright labels every 1, 2
    or 5 so that 30 of them fit a half-width figure."""
    step = 1 if count <= 12 else 2 if count <= 24 else 5
    fig.update_xaxes(range=[-0.5, count - 0.5], tick0=0, dtick=step, tickangle=0, **where)


def _log10(values: np.ndarray) -> np.ndarray:
    """log10 with zeros (a channel that never fired) floored at the smallest positive value."""
    positive = values[values > 0]
    floor = positive.min() if positive.size else 1e-12
    return np.log10(np.maximum(values, floor))


def _heatmap(
    z: np.ndarray,
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar: str,
    backend: str,
    zmin: float | None = None,
    zmax: float | None = None,
    colorscale: str = SEQUENTIAL,
    customdata: np.ndarray | None = None,
    hovertemplate: str | None = None,
    height: int = PLOTLY_HEIGHT,
):
    """A (rows, columns) heat map at integer coordinates, row 0 at the bottom."""
    rows, cols = z.shape
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel, height)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=np.arange(cols),
                y=np.arange(rows),
                zmin=zmin,
                zmax=zmax,
                colorscale=colorscale,
                colorbar=dict(title=dict(text=colorbar, side="right")),
                customdata=customdata,
                hovertemplate=hovertemplate,
            )
        )
        # Rows and columns are layers, blocks or heads: a tick on each when there are few, else plotly's own.
        fig.update_xaxes(dtick=1 if cols <= 16 else None)
        fig.update_yaxes(dtick=1 if rows <= 16 else None)
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    ax.grid(False)
    image = ax.imshow(
        z,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        vmin=zmin,
        vmax=zmax,
        cmap=MATPLOTLIB_COLORMAPS[colorscale],
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=ax, label=colorbar)
    return fig


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) index runs where ``flags`` is true."""
    runs, start = [], None
    for i, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


# --------------------------------------------------------------------------------------------------------
# Blocks


def kept_copies(kept_layers: Sequence[int] | None, num_layers: int) -> np.ndarray:
    """How many times a destination keeps each parent block, (L,): 0 removed, 2+ duplicated; all 1 without a plan."""
    if kept_layers is None:
        return np.ones(num_layers, dtype=int)
    bad = [b for b in kept_layers if not 0 <= int(b) < num_layers]
    if bad:
        raise ValueError(f"kept_layers contains {bad}: parent blocks run from 0 to {num_layers - 1}")
    return np.bincount(np.asarray(kept_layers, dtype=int), minlength=num_layers)


def residual_ratio(
    profile: Profile,
    metric: str = "f_over_sum",
    kept_layers: Sequence[int] | None = None,
    backend: str = "plotly",
) -> Figure:
    """Per-block residual metrics (``BLOCK_METRIC_LABELS``), with removed blocks greyed out.

    Args:
        profile: the parent's profile.
        metric: one of ``BLOCK_METRICS`` or ``"all"`` (the three on one axis).
        kept_layers: the parent blocks a destination keeps (a plan's ``.layers``); the others are marked
            removed: grey x markers on a grey band.
        backend: ``"plotly"`` or ``"matplotlib"``.
    """
    _check_backend(backend)
    if metric != "all" and metric not in BLOCK_METRICS:
        raise ValueError(f"metric={metric!r} is not a block metric: choose one of {', '.join(BLOCK_METRICS)} or 'all'")
    names = BLOCK_METRICS if metric == "all" else (metric,)
    num_layers = profile.num_layers
    copies = kept_copies(kept_layers, num_layers)
    kept = copies > 0
    blocks = np.arange(num_layers)
    title = "How much each block changes the residual stream"
    if kept_layers is not None:
        title += f": keeping {int(kept.sum())} of {num_layers} blocks"
    ylabel = BLOCK_METRIC_LABELS[metric] if metric != "all" else "mean over tokens"
    drawn = np.stack([profile.block_metrics[name] for name in names])  # (metrics, L)
    positive = drawn[drawn > 0]
    # ||f(x)|| / ||x|| of the first block can be 50x the others': a log axis keeps the middle blocks readable.
    log_y = positive.size == drawn.size and positive.max() > 30 * positive.min()
    if log_y:
        ylabel += " (log scale)"
    status = ["removed" if c == 0 else "kept" if c == 1 else f"kept x{c}" for c in copies]
    removed_runs = _runs(~kept)

    if backend == "plotly":
        fig = _plotly_figure(title, "block", ylabel)
        for n, (start, end) in enumerate(removed_runs):
            fig.add_vrect(
                x0=start - 0.5,
                x1=end + 0.5,
                fillcolor=REMOVED_COLOR,
                opacity=0.25,
                line_width=0,
                layer="below",
                annotation_text="removed" if n == 0 else None,
                annotation_position="top left",
            )
        for name in names:
            color = METRIC_COLORS[name]
            fig.add_trace(
                go.Scatter(
                    x=blocks,
                    y=profile.block_metrics[name],
                    mode="lines+markers",
                    name=BLOCK_METRIC_LABELS[name],
                    line=dict(color=color, width=2),
                    marker=dict(
                        color=[color if k else REMOVED_COLOR for k in kept],
                        symbol=["circle" if k else "x" for k in kept],
                        size=[8 if c <= 1 else 12 for c in copies],
                    ),
                    customdata=status,
                    hovertemplate="block %{x}: %{y:.4f} (%{customdata})<extra>%{fullData.name}</extra>",
                )
            )
        _block_axis(fig, num_layers)
        if log_y:
            _log_axis(fig, drawn)
        return fig

    fig, ax = _matplotlib_figure(title, "block", ylabel)
    for start, end in removed_runs:
        ax.axvspan(start - 0.5, end + 0.5, color=REMOVED_COLOR, alpha=0.25, lw=0)
    for n, name in enumerate(names):
        values = profile.block_metrics[name]
        color = METRIC_COLORS[name]
        ax.plot(blocks, values, color=color, lw=2, label=BLOCK_METRIC_LABELS[name])
        ax.scatter(blocks[kept], values[kept], color=color, s=[30 if c == 1 else 70 for c in copies[kept]], zorder=3)
        if (~kept).any():
            ax.scatter(
                blocks[~kept],
                values[~kept],
                color=REMOVED_COLOR,
                marker="x",
                s=45,
                zorder=4,
                label="removed blocks" if n == 0 else None,
                gid="removed",
            )
    if log_y:
        ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=9)
    return fig


def block_ablation(ablation: Any, backend: str = "plotly") -> Figure:
    """The parent's held-out loss with each block removed or duplicated, and unablated (dashed line).

    ``ablation`` is a :class:`~subclone_viz.BlockAblation` or its ``to_dict()``.
    """
    _check_backend(backend)
    data = ablation.to_dict() if hasattr(ablation, "to_dict") else dict(ablation)
    baseline = float(data["baseline"])
    removed, duplicated = np.asarray(data["removed"], float), np.asarray(data["duplicated"], float)
    blocks = np.arange(len(removed))
    title = "Held-out loss with one block removed or duplicated (no fine-tuning)"
    ylabel = "held-out loss (nats)"
    series = (("block removed", removed, SERIES_COLORS[1]), ("block duplicated", duplicated, SERIES_COLORS[0]))
    baseline_name = f"parent as is ({baseline:.3f})"
    if backend == "plotly":
        fig = _plotly_figure(title, "block", ylabel)
        for name, values, color in series:
            fig.add_trace(
                go.Scatter(
                    x=blocks,
                    y=values,
                    mode="lines+markers",
                    name=name,
                    line=dict(color=color, width=2),
                    hovertemplate="block %{x}: %{y:.4f}<extra>" + name + "</extra>",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[-0.5, len(blocks) - 0.5],
                y=[baseline, baseline],
                mode="lines",
                name=baseline_name,
                line=dict(color="#444444", dash="dash", width=1.5),
                hoverinfo="y",
            )
        )
        _block_axis(fig, len(blocks))
        return fig
    fig, ax = _matplotlib_figure(title, "block", ylabel)
    for name, values, color in series:
        ax.plot(blocks, values, marker="o", ms=4, color=color, lw=2, label=name)
    ax.axhline(baseline, color="#444444", ls="--", lw=1.5, label=baseline_name)
    ax.legend(frameon=False, fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------------------
# Residual channels


def channel_heatmap(
    profile: Profile,
    log: bool = True,
    sort: bool = True,
    top: int | None = None,
    backend: str = "plotly",
) -> Figure:
    """Mean |activation| of every residual channel at every residual layer, an (L+1) x d heat map.

    Args:
        profile: the parent's profile.
        log: colour by log10 of the importance (massive channels would otherwise wash out the rest).
        sort: order the channels by the shared ranking (most important left) instead of by index.
        top: show only the ``top`` most important channels.
        backend: ``"plotly"`` or ``"matplotlib"``.
    """
    _check_backend(backend)
    importance = profile.residual_importance  # (L+1, d)
    width = importance.shape[1]
    ranking = profile.shared_ranking()
    if top is not None:
        if not 1 <= top <= width:
            raise ValueError(f"top={top} is out of range: choose 1 <= top <= {width} (the residual width)")
        ranking = ranking[:top]
    channels = ranking if sort else np.sort(ranking)
    values = importance[:, channels]
    z = _log10(values) if log else values
    if sort:
        xlabel = "residual channel, most important first (shared ranking)"
    else:
        xlabel = "residual channel" if top is None else f"the top {top} residual channels, in index order"
    colorbar = "log10 mean |activation|" if log else "mean |activation|"
    title = "Residual channel importance across layers"
    if top is not None:
        title += f" (top {top} of {width})"
    customdata = np.broadcast_to(channels, z.shape)
    hover = "layer %{y}, channel %{customdata}<br>" + colorbar + " %{z:.3f}<extra></extra>"
    return _heatmap(
        z, title, xlabel, RESIDUAL_LAYER_AXIS, colorbar, backend, customdata=customdata, hovertemplate=hover
    )


@dataclass
class MassiveChannels:
    """The residual channels whose magnitude towers over the typical channel's."""

    channels: np.ndarray  # (n,) channel indices, most massive first
    magnitude: np.ndarray  # (L+1, n) mean |activation| of each at each residual layer
    median: np.ndarray  # (L+1,) the median channel's mean |activation| at each residual layer

    @property
    def ratio(self) -> np.ndarray:
        """(L+1, n) each channel's magnitude over the layer's median channel."""
        return self.magnitude / np.maximum(self.median, np.finfo(float).tiny)[:, None]


def massive_channels(profile: Profile, n: int = 8) -> MassiveChannels:
    """The ``n`` channels with the largest peak (over layers) of magnitude relative to the layer's median channel."""
    importance = profile.residual_importance  # (L+1, d)
    if not 1 <= n <= importance.shape[1]:
        raise ValueError(f"n={n} is out of range: choose 1 <= n <= {importance.shape[1]} (the residual width)")
    median = np.median(importance, axis=1)  # (L+1,)
    ratio = importance / np.maximum(median, np.finfo(float).tiny)[:, None]
    channels = np.argsort(-ratio.max(0), kind="stable")[:n]
    return MassiveChannels(channels=channels, magnitude=importance[:, channels], median=median)


def massive_activations(profile: Profile, n: int = 8, backend: str = "plotly") -> Figure:
    """The magnitude of the ``n`` most massive channels through depth, against the median channel (log scale)."""
    _check_backend(backend)
    massive = massive_channels(profile, n)
    layers = np.arange(len(massive.median))
    title = f"Massive-activation channels: the top {n} against the median channel"
    ylabel = "mean |activation| (log scale)"
    labels = [f"channel {c} (peak {r:.0f}x median)" for c, r in zip(massive.channels, massive.ratio.max(0))]
    if backend == "plotly":
        fig = _plotly_figure(title, RESIDUAL_LAYER_AXIS, ylabel)
        for k, label in enumerate(labels):
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=massive.magnitude[:, k],
                    mode="lines+markers",
                    name=label,
                    line=dict(color=SERIES_COLORS[k % len(SERIES_COLORS)]),
                    marker=dict(size=5),
                )
            )
        fig.add_trace(
            go.Scatter(
                x=layers, y=massive.median, mode="lines", name="median channel", line=dict(color="#444444", dash="dash")
            )
        )
        _log_axis(fig, np.concatenate([massive.magnitude.ravel(), massive.median.ravel()]))
        _block_axis(fig, len(layers))
        fig.update_layout(legend=dict(orientation="v", y=0.5, yanchor="middle", x=1.02, xanchor="left"))
        return fig
    fig, ax = _matplotlib_figure(title, RESIDUAL_LAYER_AXIS, ylabel)
    for k, label in enumerate(labels):
        ax.plot(
            layers, massive.magnitude[:, k], marker="o", ms=3, color=SERIES_COLORS[k % len(SERIES_COLORS)], label=label
        )
    ax.plot(layers, massive.median, color="#444444", ls="--", label="median channel")
    ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def rank_consistency(profile: Profile, k: int | None = None, kind: str = "spearman", backend: str = "plotly") -> Figure:
    """How much every pair of residual layers agrees on channel importance, an (L+1) x (L+1) heat map.

    ``kind="spearman"``: Spearman correlation of the channel importances; ``kind="topk"``: the fraction of
    the top-``k`` channels the two layers share (``k`` defaults to a quarter of the width).
    """
    _check_backend(backend)
    if kind not in ("spearman", "topk"):
        raise ValueError(f"kind={kind!r} is not valid: choose 'spearman' or 'topk'")
    consistency = profile.rank_consistency(k)
    if kind == "spearman":
        z, zmin, zmax, scale = consistency.spearman, -1.0, 1.0, DIVERGING
        title, colorbar = "Spearman correlation of channel importance between layers", "Spearman correlation"
    else:
        z, zmin, zmax, scale = consistency.topk_overlap, 0.0, 1.0, SEQUENTIAL
        title, colorbar = f"Shared top-{consistency.k} channels between layers", f"top-{consistency.k} overlap"
    hover = "layers %{y} and %{x}: %{z:.3f}<extra></extra>"
    fig = _heatmap(
        z,
        title,
        RESIDUAL_LAYER_AXIS,
        RESIDUAL_LAYER_AXIS,
        colorbar,
        backend,
        zmin=zmin,
        zmax=zmax,
        colorscale=scale,
        hovertemplate=hover,
        height=PLOTLY_HEIGHT + 60,
    )
    if backend == "plotly":
        fig.update_xaxes(constrain="domain")
        fig.update_yaxes(scaleanchor="x", constrain="domain")
    return fig


# --------------------------------------------------------------------------------------------------------
# Off-stream rankings


def ffn_importance(
    profile: Profile, layer: int | None = None, keep: int | None = None, backend: str = "plotly"
) -> Figure:
    """FFN hidden-neuron importance, sorted: one block's curve (``layer``), or every block as a heat map (None).

    ``keep`` marks a destination's FFN width: the neurons right of the line are dropped.
    """
    _check_backend(backend)
    importance = profile.ffn_importance  # (L, ffn)
    num_layers, ffn = importance.shape
    if keep is not None and not 1 <= keep <= ffn:
        raise ValueError(f"keep={keep} is out of range: choose 1 <= keep <= {ffn} (the parent's FFN width)")
    ranked = -np.sort(-importance, axis=1)  # each block's neurons, most important first
    xlabel = "FFN neuron, most important first"
    if layer is None:
        title = "FFN neuron importance in every block (each row sorted)"
        fig = _heatmap(
            _log10(ranked),
            title,
            xlabel,
            "block",
            "log10 mean |activation|",
            backend,
            hovertemplate="block %{y}, rank %{x}: %{z:.3f}<extra></extra>",
        )
    else:
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"layer={layer} is out of range: the parent has blocks 0 to {num_layers - 1}")
        layer %= num_layers
        title = f"FFN neuron importance in block {layer}"
        ylabel = "mean |activation| (log scale)"
        ranks = np.arange(ffn)
        if backend == "plotly":
            fig = _plotly_figure(title, xlabel, ylabel)
            fig.add_trace(
                go.Scatter(
                    x=ranks,
                    y=ranked[layer],
                    mode="lines",
                    name=f"block {layer}",
                    line=dict(color=SERIES_COLORS[0], width=2),
                )
            )
            _log_axis(fig, ranked[layer])
        else:
            fig, ax = _matplotlib_figure(title, xlabel, ylabel)
            ax.plot(ranks, ranked[layer], color=SERIES_COLORS[0], lw=2)
            ax.set_yscale("log")
    if keep is not None:
        label = f"keep {keep} of {ffn}"
        if backend == "plotly":
            fig.add_vline(x=keep - 0.5, line=dict(color=SELECTED_COLOR, dash="dash"), annotation_text=label)
        else:
            fig.axes[0].axvline(keep - 0.5, color=SELECTED_COLOR, ls="--", label=label)
            fig.axes[0].legend(frameon=False, fontsize=9)
    return fig


def head_importance(profile: Profile, backend: str = "plotly") -> Figure:
    """Mean |per-head attention output| of every query head in every block, a layers x heads heat map."""
    _check_backend(backend)
    z = profile.head_importance  # (L, heads)
    return _heatmap(
        z,
        "Attention head importance",
        "query head",
        "block",
        "mean |head output|",
        backend,
        hovertemplate="block %{y}, head %{x}: %{z:.4f}<extra></extra>",
    )


STABILITY_KINDS = ("residual", "ffn", "heads")


def selection_stability(st: "Stability", kind: str = "residual", backend: str = "plotly") -> Figure:
    """How often each residual channel (``kind="residual"``), FFN neuron (``"ffn"``, every block, each row
    sorted) or head (``"heads"``) is kept across resamples of the calibration shards.

    A frequency of 1 is kept by every resample, 0 by none; everything in between is decided by the calibration
    sample. The title gives the mean Jaccard overlap with the full profile's selection and, when measured,
    the spread of the destination's held-out loss before training.
    """
    _check_backend(backend)
    if kind not in STABILITY_KINDS:
        raise ValueError(f"kind={kind!r} is not a selection kind: choose one of {', '.join(STABILITY_KINDS)}")
    summary = st.summary()
    jaccard = summary["mean_jaccard_with_full"][kind]
    detail = f"Jaccard with full profile {jaccard:.2f}"
    if "loss" in summary:
        loss = summary["loss"]
        detail += f"; loss before training {loss['mean']:.2f} ± {loss['std']:.2f} nats (n={len(loss['values'])})"
    resamples = f"{st.resamples} {st.method} resamples, {st.importance}"
    if kind == "residual":
        frequency = st.residual_frequency  # (d,)
        order = np.argsort(-frequency, kind="stable")
        keep = st.spec["hidden"]
        title = f"Residual channels kept across {resamples}<br><sup>{detail}</sup>"
        xlabel, ylabel = "residual channel, most often kept first", "fraction of resamples keeping it"
        ranks = np.arange(len(frequency))
        if backend == "plotly":
            fig = _plotly_figure(title, xlabel, ylabel)
            fig.add_trace(
                go.Bar(
                    x=ranks,
                    y=frequency[order],
                    customdata=order,
                    marker_color=SERIES_COLORS[0],
                    hovertemplate="channel %{customdata}: kept in %{y:.0%}<extra></extra>",
                )
            )
            fig.add_vline(x=keep - 0.5, line=dict(color=SELECTED_COLOR, dash="dash"), annotation_text=f"keep {keep}")
            fig.update_yaxes(range=[0, 1.05])
            return fig
        fig, ax = _matplotlib_figure(title.replace("<br><sup>", "\n").replace("</sup>", ""), xlabel, ylabel)
        ax.bar(ranks, frequency[order], width=1.0, color=SERIES_COLORS[0])
        ax.axvline(keep - 0.5, color=SELECTED_COLOR, ls="--", label=f"keep {keep}")
        ax.set_ylim(0, 1.05)
        ax.legend(frameon=False, fontsize=9)
        return fig
    if kind == "ffn":
        z = -np.sort(-st.ffn_frequency, axis=1)  # (L, ffn) each block's neurons, most often kept first
        title = f"FFN neurons kept across {resamples} (each row sorted)<br><sup>{detail}</sup>"
        xlabel, hover = "FFN neuron, most often kept first", "block %{y}, rank %{x}: kept in %{z:.0%}<extra></extra>"
    else:
        z = st.head_frequency  # (L, heads)
        title = f"Heads kept across {resamples}<br><sup>{detail}</sup>"
        xlabel, hover = "query head", "block %{y}, head %{x}: kept in %{z:.0%}<extra></extra>"
    if backend == "matplotlib":
        title = title.replace("<br><sup>", "\n").replace("</sup>", "")
    return _heatmap(
        z, title, xlabel, "block", "fraction of resamples keeping it", backend, zmin=0, zmax=1, hovertemplate=hover
    )


# --------------------------------------------------------------------------------------------------------
# One token


def token_trace_title(trace: "TokenTrace") -> str:
    """The title :func:`token_trace` gives ``trace``'s figure (a widget that swaps only the curves sets it)."""
    token = f" {trace.token!r}" if trace.token is not None else ""
    return f"Token {trace.token_index}{token} through the depth of {trace.parent}"


def token_trace(trace: "TokenTrace", backend: str = "plotly") -> Figure:
    """One token through depth: its norm (top), and how its direction changes (bottom): the traces
    ||h[l]||, cos(h[l-1], h[l]), cos(h[l], h[L]) and ||f(x)|| / ||x + f(x)||, in that order."""
    _check_backend(backend)
    num_layers = trace.num_layers
    layers = np.arange(num_layers + 1)
    title = token_trace_title(trace)
    lower = (
        ("cos(h[l-1], h[l]): block input vs output", layers[1:], trace.cos_to_previous, SERIES_COLORS[0], "solid"),
        ("cos(h[l], h[L]): vs the last layer", layers, trace.cos_to_final, SERIES_COLORS[2], "solid"),
        ("||f(x)|| / ||x + f(x)|| of the block", layers[1:], trace.f_over_sum, SERIES_COLORS[3], "dash"),
    )
    if backend == "plotly":
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.45, 0.55])
        _style_plotly(fig, title, PLOTLY_HEIGHT + 120)
        fig.add_trace(
            go.Scatter(x=layers, y=trace.norms, mode="lines+markers", name="||h[l]||", line=dict(color="#444444")),
            row=1,
            col=1,
        )
        for name, x, y, color, dash in lower:
            fig.add_trace(
                go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=dict(color=color, dash=dash)), row=2, col=1
            )
        fig.update_yaxes(title_text="norm", row=1, col=1)
        fig.update_yaxes(title_text="cosine / ratio", row=2, col=1)
        fig.update_xaxes(title_text=RESIDUAL_LAYER_AXIS, row=2, col=1)
        _block_axis(fig, num_layers + 1)
        # Below the plot, the four long legend entries wrap within the figure's width instead of running off it.
        fig.update_layout(
            legend=dict(orientation="h", yanchor="top", y=-0.14, xanchor="left", x=0.0), margin=dict(b=110)
        )
        return fig
    fig = MatplotlibFigure(figsize=(MATPLOTLIB_SIZE[0], MATPLOTLIB_SIZE[1] * 1.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[0.45, 0.55])
    fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    _style_axes(top, "", "norm")
    top.plot(layers, trace.norms, marker="o", ms=3, color="#444444", label="||h[l]||")
    _style_axes(bottom, RESIDUAL_LAYER_AXIS, "cosine / ratio")
    for name, x, y, color, dash in lower:
        bottom.plot(x, y, marker="o", ms=3, color=color, ls="--" if dash == "dash" else "-", label=name)
    bottom.legend(frameon=False, fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------------
# Training


def history_series(history: Any, metric: str, x: str = "step") -> tuple[str, np.ndarray, np.ndarray, str]:
    """(label, xs, ys, unit) of one metric of one training history.

    Accepts a :class:`subclone_viz.train.History` (or anything with ``to_dict()``) or a plain dict: either the
    History layout (``label``, ``unit``, ``steps`` with step/seen/loss and ``evals`` with
    step/seen/loss/accuracy) or a flat ``{"label", "records": [{step, tokens, train_loss, eval_loss, ...}]}``.
    """
    source, field = ("steps", "loss") if metric == "train_loss" else ("evals", metric.removeprefix("eval_"))
    if isinstance(history, History):
        # Its records read as they are: to_dict() copies every record, most of a live redraw's time.
        label, unit = history.label, history.unit
        rows = [(r.step, r.seen, getattr(r, field)) for r in getattr(history, source)]
    else:
        data = history.to_dict() if hasattr(history, "to_dict") else history
        if not isinstance(data, Mapping):
            raise TypeError(f"a history must be a History, have to_dict(), or be a dict; got {type(history).__name__}")
        label, unit = data.get("label", ""), data.get("unit", "tokens")
        if "records" in data:
            rows = [(r.get("step"), r.get("tokens", r.get("seen")), r.get(metric)) for r in data["records"]]
        elif "steps" in data or "evals" in data:
            rows = [(r.get("step"), r.get("seen"), r.get(field)) for r in data.get(source, [])]
        else:
            raise ValueError(f"not a training history: expected 'records' or 'steps'/'evals' keys, got {sorted(data)}")
    rows = [r for r in rows if r[2] is not None and not (isinstance(r[2], float) and math.isnan(r[2]))]
    position = 0 if x == "step" else 1
    xs = np.array([r[position] for r in rows], dtype=float)
    ys = np.array([r[2] for r in rows], dtype=float)
    return str(label), xs, ys, unit


def loss_curves(
    histories: Mapping[str, Any] | Sequence[Any],
    metric: str = "eval_loss",
    x: str = "step",
    backend: str = "plotly",
) -> Figure:
    """One line per training run (per initialization).

    Args:
        histories: ``{label: history}`` (a dict's keys are the legend labels), or a list of histories
            labelled by their own ``label``. A history is anything :func:`history_series` reads.
        metric: ``"eval_loss"``, ``"train_loss"`` or ``"eval_accuracy"``.
        x: ``"step"`` (optimizer steps) or ``"tokens"`` (tokens, or images, trained on).
        backend: ``"plotly"`` or ``"matplotlib"``.
    """
    _check_backend(backend)
    if metric not in HISTORY_METRICS:
        raise ValueError(f"metric={metric!r} is not a history metric: choose one of {', '.join(HISTORY_METRICS)}")
    if x not in ("step", "tokens"):
        raise ValueError(f"x={x!r} is not valid: choose 'step' or 'tokens'")
    items = list(histories.items()) if isinstance(histories, Mapping) else [(None, h) for h in histories]
    series = []
    for label, history in items:
        own_label, xs, ys, unit = history_series(history, metric, x)
        series.append((label if label is not None else own_label, xs, ys, unit))
    unit = series[0][3] if series else "tokens"
    xlabel = "optimizer step" if x == "step" else f"{unit} seen"
    title = {
        "eval_loss": "Held-out loss during training",
        "train_loss": "Training loss",
        "eval_accuracy": "Held-out accuracy during training",
    }[metric]
    mode = "lines" if metric == "train_loss" else "lines+markers"
    empty = not any(len(xs) for _, xs, _, _ in series)
    waiting = "no training yet: the curves appear here as it runs" if not series else "waiting for the first point..."
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, HISTORY_METRICS[metric])
        for k, (label, xs, ys, _) in enumerate(series):
            fig.add_trace(
                go.Scatter(
                    x=xs, y=ys, mode=mode, name=label, line=dict(color=SERIES_COLORS[k % len(SERIES_COLORS)], width=2)
                )
            )
        if empty:  # before training: a sentence, not axes running over an arbitrary range
            _note(fig, waiting)
        else:  # named either way, so that a live figure's axes come back when its first points arrive
            fig.update_xaxes(visible=True)
            fig.update_yaxes(visible=True)
        return fig
    if empty:
        return placeholder(title, waiting, backend=backend)
    fig, ax = _matplotlib_figure(title, xlabel, HISTORY_METRICS[metric])
    for k, (label, xs, ys, _) in enumerate(series):
        ax.plot(
            xs,
            ys,
            marker="o" if mode != "lines" else None,
            ms=3,
            lw=2,
            label=label,
            color=SERIES_COLORS[k % len(SERIES_COLORS)],
        )
    if series:
        ax.legend(frameon=False, fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------------------
# Destination sizes


def _format_quantity(value: float, quantity: str) -> str:
    if math.isnan(value):
        return "n/a"
    if quantity == "loss":
        return f"{value:.2f}"
    if quantity in GRID_UNITS:
        value *= GRID_UNITS[quantity]
        return f"{value:.3g}"
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}"


def cell_outline(i: int, j: int) -> dict[str, Any]:
    """The plotly shape outlining cell (i, j) of a :func:`size_grid` heat map (it sits at x = j, y = i)."""
    return dict(
        type="rect",
        x0=j - 0.5,
        x1=j + 0.5,
        y0=i - 0.5,
        y1=i + 0.5,
        name="selected",
        line=dict(color=SELECTED_COLOR, width=4),
    )


def size_grid(
    grid: SizeGrid | Mapping[str, Any],
    quantity: str = "loss",
    selected: tuple[int, int] | None = None,
    backend: str = "plotly",
) -> Figure:
    """One quantity of a size grid as a layers x hidden heat map; ``selected=(i, j)`` outlines that cell.

    Cells the parent cannot give are blank, with the reason in their hover text. Cell (i, j) sits at
    x = j, y = i (tick labels give the widths and block counts), so a click's (x, y) is the cell index.
    """
    _check_backend(backend)
    if isinstance(grid, Mapping):
        grid = SizeGrid.from_dict(grid)
    if quantity not in (*QUANTITIES, ACTIVE_PARAMS):
        raise ValueError(
            f"quantity={quantity!r} is not a grid quantity: choose one of {', '.join((*QUANTITIES, ACTIVE_PARAMS))}"
        )
    z = grid.quantity(quantity) * GRID_UNITS.get(quantity, 1)
    rows, cols = z.shape
    if selected is not None:
        i, j = selected
        if not (0 <= i < rows and 0 <= j < cols):
            raise ValueError(f"selected={selected} is outside the {rows} x {cols} grid")
    text = [[_format_quantity(v, quantity) for v in row] for row in grid.quantity(quantity)]
    notes = [[grid.reasons[i][j] or text[i][j] for j in range(cols)] for i in range(rows)]
    if quantity == "latency":  # a measured time is shown with how much it moved between repeats
        spread = grid.spread("latency") * GRID_UNITS["latency"]
        notes = [
            [
                note if grid.reasons[i][j] or not spread[i, j] else f"{note} ± {spread[i, j]:.2g} ms"
                for j, note in enumerate(row)
            ]
            for i, row in enumerate(notes)
        ]
    title = f"{GRID_TITLES[quantity]} of each subclone of {grid.parent}{_grid_fixed(grid)}"
    xlabel, ylabel = GRID_AXIS_LABELS[grid.axes[1]], GRID_AXIS_LABELS[grid.axes[0]]
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=np.arange(cols),
                y=np.arange(rows),
                colorscale=SEQUENTIAL,
                text=text,
                texttemplate="%{text}",
                customdata=np.array(notes, dtype=object),
                colorbar=dict(title=dict(text=GRID_LABELS[quantity], side="right")),
                hovertemplate="%{customdata}<extra></extra>",
            )
        )
        fig.update_xaxes(tickvals=list(range(cols)), ticktext=[str(h) for h in grid.axis_values(1)])
        fig.update_yaxes(tickvals=list(range(rows)), ticktext=[str(n) for n in grid.axis_values(0)])
        if selected is not None:
            fig.add_shape(cell_outline(*selected))
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    ax.grid(False)
    colormap = matplotlib.colormaps[MATPLOTLIB_COLORMAPS[SEQUENTIAL]].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(z), origin="lower", aspect="auto", cmap=colormap, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=GRID_LABELS[quantity])
    ax.set_xticks(range(cols), [str(h) for h in grid.axis_values(1)])
    ax.set_yticks(range(rows), [str(n) for n in grid.axis_values(0)])
    for i in range(rows):
        for j in range(cols):
            color = "#666666" if math.isnan(z[i, j]) else "white"
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8, color=color)
    if selected is not None:
        i, j = selected
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=SELECTED_COLOR, lw=3, gid="selected"))
    return fig


def _grid_fixed(grid: SizeGrid) -> str:
    """The value a size grid holds fixed where it varies the experts (``", 32 wide"``), else nothing."""
    if "experts" not in grid.axes:
        return f", {grid.experts[0]} experts kept" if grid.experts else ""
    return f", {grid.hidden[0]} wide" if "hidden" not in grid.axes else f", {grid.layers[0]} blocks"


def size_pareto(grid: SizeGrid | Mapping[str, Any], cost: str = "latency", backend: str = "plotly") -> Figure:
    """Held-out loss before training against one cost, one point per valid cell; the Pareto front (the
    cells no other cell beats on both) is highlighted and joined, each point labelled ``blocks x width`` (and
    the experts kept, where the grid names them). ``cost="active_params"`` ranks a mixture of experts by the
    parameters one token uses. A measured latency carries its spread as a horizontal error bar: points whose
    bars overlap are not ranked."""
    _check_backend(backend)
    if isinstance(grid, Mapping):
        grid = SizeGrid.from_dict(grid)
    if cost not in GRID_COSTS:
        raise ValueError(f"cost={cost!r} is not a cost of the grid: choose one of {', '.join(GRID_COSTS)}")
    front = grid.pareto_front(cost)
    costs = grid.quantity(cost) * GRID_UNITS.get(cost, 1)
    spreads = grid.spread(cost) * GRID_UNITS.get(cost, 1)
    valid = np.isfinite(costs) & np.isfinite(grid.loss)
    cells = sorted(zip(*np.nonzero(valid)), key=lambda ij: costs[ij])
    labels = {ij: grid.label(*ij) for ij in cells}
    groups = {"Pareto front": [ij for ij in cells if front[ij]], "other sizes": [ij for ij in cells if not front[ij]]}
    title = f"Loss before training against {GRID_TITLES[cost].lower()}, {grid.parent}"
    xlabel, ylabel = GRID_LABELS[cost], GRID_LABELS["loss"]
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        for name, members in groups.items():
            on_front = name == "Pareto front"
            fig.add_trace(
                go.Scatter(
                    x=[costs[ij] for ij in members],
                    y=[grid.loss[ij] for ij in members],
                    name=name,
                    mode="lines+markers+text" if on_front else "markers",
                    text=[labels[ij] for ij in members],
                    textposition="top right",
                    line=dict(color=FRONT_COLOR, width=2),
                    marker=dict(size=10 if on_front else 7, color=FRONT_COLOR if on_front else REMOVED_COLOR),
                    error_x=dict(
                        type="data",
                        array=[spreads[ij] for ij in members],
                        visible=bool(spreads.any()),
                        color=FRONT_COLOR if on_front else REMOVED_COLOR,
                        thickness=1.5,
                    ),
                    hovertemplate="%{text}: %{x:.3g}, loss %{y:.2f}<extra></extra>",
                )
            )
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    for name, members in groups.items():
        on_front = name == "Pareto front"
        xs, ys = [costs[ij] for ij in members], [grid.loss[ij] for ij in members]
        ax.plot(
            xs,
            ys,
            marker="o",
            ls="-" if on_front else "none",
            label=name,
            ms=7 if on_front else 5,
            color=FRONT_COLOR if on_front else REMOVED_COLOR,
            lw=2,
        )
        if spreads.any():
            ax.errorbar(
                xs,
                ys,
                xerr=[spreads[ij] for ij in members],
                fmt="none",
                lw=1,
                ecolor=FRONT_COLOR if on_front else REMOVED_COLOR,
            )
        if on_front:
            for x, y, ij in zip(xs, ys, members):
                ax.annotate(labels[ij], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.legend(frameon=False, fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------------------
# The speedup study

_SPEEDUP_AXES = {"speedup": ("per optimizer step", "solid"), "speedup_per_second": ("per second of training", "dot")}


def _speedup_points(sizes: Sequence[Mapping[str, Any]], init: str, key: str) -> list[tuple[Any, ...]]:
    """(parameters in millions, speedup, marker kind, size label, (lowest, highest) over the seeds or None) of
    one init, where its speedup is defined."""
    points = []
    for size in sizes:
        gain = size["speedups"].get(init)
        if gain is None or gain.get(key) is None:
            continue
        kind = "lower bound" if gain["speedup_lower_bound"] else "not reached" if not gain["reached"] else "reached"
        spread = gain.get(f"{key}_range")
        points.append((size["parameters"] / 1e6, float(gain[key]), kind, size["label"], tuple(spread or ()) or None))
    return sorted(points, key=lambda point: point[:2])


def _seed_bars(points: Sequence[tuple[Any, ...]]) -> dict[str, Any] | None:
    """Plotly error bars from each point's range over the seeds (none without seeds)."""
    if not any(point[4] for point in points):
        return None
    return dict(
        type="data",
        symmetric=False,
        array=[point[4][1] - point[1] if point[4] else 0.0 for point in points],
        arrayminus=[point[1] - point[4][0] if point[4] else 0.0 for point in points],
        thickness=1.5,
    )


def speedup_by_size(sizes: Sequence[Mapping[str, Any]], backend: str = "plotly") -> Figure:
    """Speedup over random init against the destination's size, one line per initialization.

    Args:
        sizes: one record per destination size, as ``bench/bench_speedup_study.py`` writes them:
            ``{"label": "20 x 384", "parameters": 41_000_000, "speedups": {init: Speedup.to_dict()}}``.
            Solid lines: speedup per optimizer step; dotted: per second of training (a teacher's forward
            makes a step dearer). Triangles up: lower bounds (already at random's final loss at the first
            evaluation); triangles down: never reached it (an upper bound below 1). A study of several seeds
            draws the geometric mean, with the range over its seeds as error bars.
        backend: ``"plotly"`` or ``"matplotlib"``.
    """
    _check_backend(backend)
    missing = [k for k in ("label", "parameters", "speedups") for size in sizes if k not in size]
    if missing:
        raise ValueError(f"a size record needs 'label', 'parameters' and 'speedups'; missing {sorted(set(missing))}")
    inits = list(dict.fromkeys(init for size in sizes for init in size["speedups"] if init != "random"))
    title = "Speedup over random init by destination size"
    xlabel, ylabel = "destination parameters (millions)", "speedup over random init (x, log scale)"
    symbols = {"reached": ("circle", "o"), "lower bound": ("triangle-up", "^"), "not reached": ("triangle-down", "v")}
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        # Speedups double from tick to tick, as in the matplotlib version; plotly's own log ticks label 20 as "2".
        points_by_axis = [p for init in inits for key in _SPEEDUP_AXES for p in _speedup_points(sizes, init, key)]
        values = [1.0] + [v for p in points_by_axis for v in (p[1], *(p[4] or ()))]
        ticks = [2.0**k for k in range(math.floor(math.log2(min(values))), math.ceil(math.log2(max(values))) + 1)]
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{tick:g}x" for tick in ticks])
        fig.add_hline(y=1.0, line=dict(color=REMOVED_COLOR, dash="dash"))
        # On a log axis an annotation's y is the exponent: 0 puts the label on the 1x line.
        fig.add_annotation(
            text="random init",
            x=1.0,
            xref="paper",
            xanchor="right",
            y=0.0,
            yref="y",
            yanchor="bottom",
            showarrow=False,
            font=dict(color=REMOVED_COLOR),
        )
        # Six entries do not fit one line above the plot without running into the title: a column on the right.
        fig.update_layout(legend=dict(orientation="v", y=0.5, yanchor="middle", x=1.02, xanchor="left"))
        for k, init in enumerate(inits):
            color = SERIES_COLORS[k % len(SERIES_COLORS)]
            for key, (axis_name, dash) in _SPEEDUP_AXES.items():
                points = _speedup_points(sizes, init, key)
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in points],
                        y=[p[1] for p in points],
                        mode="lines+markers",
                        name=f"{init}, {axis_name}",
                        line=dict(color=color, dash=dash, width=2),
                        marker=dict(
                            symbol=[symbols[p[2]][0] + ("" if dash == "solid" else "-open") for p in points], size=10
                        ),
                        customdata=[
                            [p[3], p[2] + (f", seeds {p[4][0]:.2f}-{p[4][1]:.2f}x" if p[4] else "")] for p in points
                        ],
                        hovertemplate="%{customdata[0]}: %{y:.2f}x (%{customdata[1]})<extra>" + init + "</extra>",
                        error_y=_seed_bars(points),
                    )
                )
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=2))  # 0.5x, 1x, 2x, 4x, 8x: speedups double
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(AutoLocator())  # millions of parameters are not counts
    ax.axhline(1.0, color=REMOVED_COLOR, ls="--", lw=1)
    for k, init in enumerate(inits):
        color = SERIES_COLORS[k % len(SERIES_COLORS)]
        for key, (axis_name, dash) in _SPEEDUP_AXES.items():
            points = _speedup_points(sizes, init, key)
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                color=color,
                lw=2,
                ls="-" if dash == "solid" else ":",
                label=f"{init}, {axis_name}",
            )
            for x, y, kind, _, spread in points:  # per second hollow: the two stay apart where lines are points
                if spread:
                    ax.errorbar([x], [y], yerr=[[y - spread[0]], [spread[1] - y]], color=color, lw=1.5, capsize=3)
                ax.plot(
                    [x],
                    [y],
                    marker=symbols[kind][1],
                    color=color,
                    ms=7,
                    ls="none",
                    markerfacecolor=color if dash == "solid" else "white",
                )
    for size in sizes:
        ax.annotate(
            size["label"],
            (size["parameters"] / 1e6, 0.0),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=8,
            color="#555555",
        )
    if inits:
        ax.legend(frameon=False, fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------------------
# What a cut loses: the logit lens, layer similarity, per-token losses, image predictions
# (records from subclone_viz.lens, .similarity and .outputs; plotly only where a table or text is the figure)


def _lens_x(lens: "LogitLens") -> np.ndarray:
    """Each lens layer's position on the parent's depth axis: 0 for the embedding, parent block + 1 after it."""
    return np.array([0 if source is None else source + 1 for source in lens.sources], dtype=float)


def lens_loss(lenses: "Mapping[str, LogitLens]", backend: str = "plotly") -> "go.Figure | MatplotlibFigure":
    """Loss of the logit lens through depth, one line per model, on the parent's depth axis: a destination's
    layers sit at the parent block they came from, so removed blocks show as a jump over the gap."""
    _check_backend(backend)
    title = "Predictions through depth: the logit lens's loss"
    xlabel, ylabel = "parent residual layer (0 = embedding output)", "next-token loss read at the layer (nats)"
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        for k, (name, lens) in enumerate(lenses.items()):
            fig.add_trace(
                go.Scatter(
                    x=_lens_x(lens),
                    y=lens.loss,
                    mode="lines+markers",
                    name=name,
                    customdata=lens.labels,
                    line=dict(color=SERIES_COLORS[k % len(SERIES_COLORS)], width=2),
                    hovertemplate="%{customdata}: %{y:.3f} nats<extra>" + name + "</extra>",
                )
            )
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    for k, (name, lens) in enumerate(lenses.items()):
        ax.plot(_lens_x(lens), lens.loss, marker="o", ms=3, color=SERIES_COLORS[k % len(SERIES_COLORS)], label=name)
    ax.legend(frameon=False)
    return fig


def _predictions_cell(predictions: list[tuple[str, float]] | None, rank: int | None) -> str:
    if predictions is None:
        return "skipped (block removed)"
    shown = ", ".join(f"{text!r} {p:.2f}" for text, p in predictions)
    return shown + ("" if rank is None or rank < 0 else f"  [target rank {rank}]")


def _through_depth_table(
    parent: "LogitLens", destination: "LogitLens | None", sequence: int, position: int
) -> tuple[str, list[str], list[list[str]], list[list[str]]]:
    """Title, column names, cells and cell fills (column by column) of the predictions-through-depth table."""
    rows = through_depth(parent, destination, sequence, position)
    token = None if parent.tokens is None else parent.tokens[sequence][position]
    title = "Predictions through depth" + (f" after {token!r} (position {position})" if token is not None else "")
    columns = ["layer", parent.model] + ([destination.model] if destination is not None else [])
    cells = [[row["layer"] for row in rows], [_predictions_cell(row["parent"], row["parent_rank"]) for row in rows]]
    fill = [["white"] * len(rows), ["white"] * len(rows)]
    if destination is not None:
        cells.append([_predictions_cell(row["destination"], row["destination_rank"]) for row in rows])
        fill.append(["#eeeeee" if row["destination"] is None else "white" for row in rows])
    return title, columns, cells, fill


def predictions_through_depth_html(
    parent: "LogitLens", destination: "LogitLens | None" = None, sequence: int = 0, position: int = 0
) -> str:
    """:func:`predictions_through_depth`'s table as an HTML table, for a widget: plotly.js draws a table that a
    live figure widget receives as an update with its first row only (seen in JupyterLab)."""
    title, columns, cells, fill = _through_depth_table(parent, destination, sequence, position)
    cell_style = "padding: 2px 8px; text-align: left; font-family: monospace; font-size: 12px"
    head = "".join(f'<th style="{cell_style}; background: #c8d4e3">{html.escape(name)}</th>' for name in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="{cell_style}; background: {fill[c][r]}">{html.escape(cells[c][r])}</td>'
            for c in range(len(columns))
        )
        + "</tr>"
        for r in range(len(cells[0]))
    )
    return (
        f'<div class="predictions-through-depth"><b>{html.escape(title)}</b>'
        f'<table style="border-collapse: collapse"><tr>{head}</tr>{body}</table></div>'
    )


def predictions_through_depth(
    parent: "LogitLens", destination: "LogitLens | None" = None, sequence: int = 0, position: int = 0
) -> go.Figure:
    """A table: per parent residual layer (depth grows downward), the parent's top-k next tokens and the
    destination's at the layer that came from it; blocks the plan removed read "skipped"."""
    title, columns, cells, fill = _through_depth_table(parent, destination, sequence, position)
    rows = cells[0]
    fig = go.Figure(
        go.Table(
            columnwidth=[1.2] + [4] * (len(columns) - 1),
            header=dict(values=columns, align="left", font=dict(size=13)),
            cells=dict(values=cells, align="left", fill_color=fill, font=dict(size=12), height=24),
        )
    )
    _style_plotly(fig, title, max(PLOTLY_HEIGHT, 90 + 25 * len(rows)))
    return fig


def similarity_heatmap(
    similarity: "LayerSimilarity", backend: str = "plotly", title: str | None = None
) -> "go.Figure | MatplotlibFigure":
    """Cosine on the kept channels of every parent residual layer (rows) against every destination layer
    (columns), the layers each destination layer came from outlined; hover shows CKA on those."""
    _check_backend(backend)
    z = similarity.cosine_matrix  # (L_p + 1, L_d + 1)
    title = title or f"Hidden states of {similarity.destination} against {similarity.parent}"
    xlabel, ylabel = "destination residual layer (0 = embedding)", "parent residual layer (0 = embedding)"
    cka = np.full(z.shape, np.nan)
    for j, m in enumerate(similarity.matches):
        cka[m, j] = similarity.cka[j]
    fig = _heatmap(
        z,
        title,
        xlabel,
        ylabel,
        "mean cosine, kept channels",
        backend,
        zmin=-1.0,
        zmax=1.0,
        colorscale=DIVERGING,
        customdata=cka,
        hovertemplate="parent layer %{y}, destination layer %{x}: cosine %{z:.3f}, CKA %{customdata:.3f}"
        "<extra></extra>",
    )
    if backend == "plotly":
        fig.add_trace(
            go.Scatter(
                x=np.arange(len(similarity.matches)),
                y=similarity.matches,
                mode="markers",
                name="came from",
                marker=dict(symbol="square-open", size=12, color="black"),
                hoverinfo="skip",
            )
        )
        return fig
    ax = fig.axes[0]
    ax.plot(np.arange(len(similarity.matches)), similarity.matches, "s", mfc="none", mec="black", ms=8)
    return fig


def similarity_by_layer(
    similarities: "Mapping[str, LayerSimilarity]", backend: str = "plotly"
) -> "go.Figure | MatplotlibFigure":
    """Linear CKA (solid) and kept-channel cosine (dotted) of each destination layer against the parent layer it
    came from, one colour per record (e.g. before and after training)."""
    _check_backend(backend)
    title = "Where the destination parts from its parent"
    xlabel, ylabel = "destination residual layer (0 = embedding)", "similarity to the parent layer it came from"
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        fig.update_yaxes(range=[min(0.0, *(float(np.nanmin(s.cosine)) for s in similarities.values())), 1.02])
        for k, (name, sim) in enumerate(similarities.items()):
            color = SERIES_COLORS[k % len(SERIES_COLORS)]
            x = np.arange(len(sim.cka))
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=sim.cka,
                    mode="lines+markers",
                    name=f"{name}: CKA",
                    customdata=sim.destination_labels,
                    line=dict(color=color, width=2),
                    hovertemplate="%{customdata}: CKA %{y:.3f}<extra></extra>",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=sim.cosine,
                    mode="lines",
                    name=f"{name}: cosine",
                    customdata=sim.destination_labels,
                    line=dict(color=color, width=2, dash="dot"),
                    hovertemplate="%{customdata}: cosine %{y:.3f}<extra></extra>",
                )
            )
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    for k, (name, sim) in enumerate(similarities.items()):
        color = SERIES_COLORS[k % len(SERIES_COLORS)]
        ax.plot(sim.cka, color=color, marker="o", ms=3, label=f"{name}: CKA")
        ax.plot(sim.cosine, color=color, ls=":", label=f"{name}: cosine")
    ax.legend(frameon=False, fontsize=8)
    return fig


def token_loss_html(
    losses: "TokenLosses", name: str, reference: str | None = None, sequence: int = 0, limit: float = 2.0
) -> str:
    """The sequence's text, each token's background coloured by ``name``'s loss minus the reference's (red:
    worse than the reference, blue: better, saturating at +-``limit`` nats); hovering shows both losses."""
    if losses.tokens is None:
        raise ValueError("these losses carry no token texts (images, or no tokenizer): nothing to colour")
    reference = reference or losses.names[0]
    difference = losses.difference(name, reference)[sequence]
    mine, theirs = losses.losses[name][sequence], losses.losses[reference][sequence]
    spans = []
    for token, delta, a, b in zip(losses.tokens[sequence], difference, mine, theirs):
        if np.isnan(delta):
            spans.append(f"<span>{html.escape(token)}</span>")
            continue
        strength = min(abs(float(delta)) / limit, 1.0)
        rgb = (214, 39, 40) if delta > 0 else (31, 119, 180)
        tip = f"{name}: {a:.2f} nats, {reference}: {b:.2f} nats, difference {delta:+.2f}"
        spans.append(
            f'<span title="{html.escape(tip)}" style="background: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, '
            f'{0.8 * strength:.2f})">{html.escape(token)}</span>'
        )
    return '<div style="white-space: pre-wrap; font-family: monospace; line-height: 1.6">' + "".join(spans) + "</div>"


def image_predictions(lenses: "Mapping[str, LogitLens]", images: np.ndarray, count: int = 6) -> go.Figure:
    """A few held-out images, each titled with every model's predicted class and confidence (its last lens
    layer, the model's own output) and the true label.

    Args:
        lenses: per model, a logit lens of an image classifier on the same batch.
        images: the batch's pixel values (B, C, H, W), shown in grey (the first channel).
        count: how many images.
    """
    first = next(iter(lenses.values()))
    if first.task != "image-classification":
        raise ValueError(f"image_predictions reads image classifiers' lenses, not {first.task!r}")
    count = min(count, images.shape[0])
    titles = []
    for i in range(count):
        lines = [f"label {first.text(first.targets[i, 0])}" if first.targets[i, 0] >= 0 else "no label"]
        for name, lens in lenses.items():
            lines.append(f"{name}: {lens.text(lens.top_ids[-1, i, 0, 0])} ({lens.top_probs[-1, i, 0, 0]:.0%})")
        titles.append("<br>".join(lines))
    fig = make_subplots(rows=1, cols=count, subplot_titles=titles)
    for i in range(count):
        fig.add_trace(
            go.Heatmap(z=np.asarray(images[i, 0])[::-1], colorscale="Greys", showscale=False, hoverinfo="skip"),
            row=1,
            col=i + 1,
        )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    _style_plotly(fig, "Predicted class and confidence", 200 + 20 * len(lenses))
    fig.update_layout(margin=dict(t=70 + 18 * len(lenses)))
    fig.update_annotations(font=dict(size=11))
    return fig


def expert_load_heatmap(profile: Profile, backend: str = "plotly") -> Figure:
    """A mixture of experts' routing: the share of each layer's routed tokens that each expert took, layers x
    experts (dense layers are rows of zeros). Uniform routing is 1 / experts everywhere."""
    _check_backend(backend)
    if "expert_tokens" not in profile.stats:
        raise ValueError("this profile holds no expert statistics: it is not the profile of a mixture of experts")
    load = expert_load(profile)  # (L, E)
    entropy = np.repeat(router_entropy(profile)[:, None], load.shape[1], axis=1)
    return _heatmap(
        load,
        "Expert load (share of routed tokens)",
        "expert",
        "block",
        "load share",
        backend,
        customdata=entropy,
        hovertemplate="block %{y}, expert %{x}: %{z:.3f} (router entropy %{customdata:.2f} nats)<extra></extra>",
    )


def expert_neuron_curves(profile: Profile, layer: int, backend: str = "plotly") -> Figure:
    """One block's experts: each expert's FFN neuron importance (mean |activation| on its routed tokens),
    sorted, one line per expert."""
    _check_backend(backend)
    importance = expert_neuron_importance(profile)  # (L, E, F)
    if not 0 <= layer < importance.shape[0]:
        raise ValueError(f"layer={layer} is out of range: the parent has blocks 0 to {importance.shape[0] - 1}")
    ranked = -np.sort(-importance[layer], axis=1)  # (E, F)
    title, xlabel, ylabel = (
        f"Expert neuron importance in block {layer}",
        "neuron, most important first",
        "mean |activation| on routed tokens",
    )
    ranks = np.arange(ranked.shape[1])
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        for e, curve in enumerate(ranked):
            fig.add_trace(
                go.Scatter(
                    x=ranks,
                    y=curve,
                    mode="lines",
                    name=f"expert {e}",
                    line=dict(color=SERIES_COLORS[e % len(SERIES_COLORS)], width=1.5),
                )
            )
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    for e, curve in enumerate(ranked):
        ax.plot(ranks, curve, color=SERIES_COLORS[e % len(SERIES_COLORS)], lw=1.5, label=f"expert {e}")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    return fig


# --------------------------------------------------------------------------------------------------------
# Forecasts and the budget chooser

BUDGET_LABELS = {**GRID_LABELS, "loss": "forecast held-out loss at the budget (nats)"}


def _budget_points(grid: Any, cost: str) -> dict[str, list[dict[str, Any]]]:
    """The cells of each init, cheapest first, with their cost in drawing units and a label."""
    by_init: dict[str, list[dict[str, Any]]] = {}
    for cell in grid.cells:
        if math.isfinite(cell.get(cost, math.nan)):
            by_init.setdefault(cell["init"], []).append(
                {**cell, "x": cell[cost] * GRID_UNITS.get(cost, 1), "label": f"{cell['layers']} x {cell['hidden']}"}
            )
    return {init: sorted(cells, key=lambda c: c["x"]) for init, cells in by_init.items()}


def budget_pareto(grid: Any, cost: str = "params", backend: str = "plotly") -> Figure:
    """Forecast held-out loss at the budget against one inference cost, with the forecasts' intervals as error
    bars, one series per initialization; the Pareto front (no cell both cheaper and better) joined in red.

    Args:
        grid: a :class:`~subclone_viz.budget.BudgetGrid` (or its ``to_dict()``).
        cost: "params", "flops_per_token", "latency" or "memory".
        backend: ``"plotly"`` or ``"matplotlib"``.
    """
    _check_backend(backend)
    grid = BudgetGrid.from_dict(grid) if isinstance(grid, Mapping) else grid
    front = {(c["layers"], c["hidden"], c["init"]) for c in grid.pareto_front(cost)}
    series = _budget_points(grid, cost)
    budget = f"{grid.tokens:,.0f} tokens" if grid.tokens is not None else f"{grid.flops:.3g} FLOPs (iso-compute)"
    title = f"Forecast loss at {budget} against {GRID_TITLES[cost].lower()}, {grid.parent}"
    xlabel, ylabel = BUDGET_LABELS[cost], BUDGET_LABELS["loss"]
    front_cells = sorted(
        (c for cells in series.values() for c in cells if (c["layers"], c["hidden"], c["init"]) in front),
        key=lambda c: c["x"],
    )
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        for k, (init, cells) in enumerate(series.items()):
            fig.add_trace(
                go.Scatter(
                    x=[c["x"] for c in cells],
                    y=[c["forecast"]["loss"] for c in cells],
                    mode="markers",
                    name=init,
                    marker=dict(size=9, color=SERIES_COLORS[k % len(SERIES_COLORS)]),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=[c["forecast"]["high"] - c["forecast"]["loss"] for c in cells],
                        arrayminus=[c["forecast"]["loss"] - c["forecast"]["low"] for c in cells],
                    ),
                    text=[f"{c['label']} {init}, {c['steps']:,} steps" for c in cells],
                    hovertemplate="%{text}: %{x:.3g}, forecast %{y:.3f}<extra></extra>",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[c["x"] for c in front_cells],
                y=[c["forecast"]["loss"] for c in front_cells],
                mode="lines+text",
                name="Pareto front",
                line=dict(color=FRONT_COLOR, width=2),
                text=[c["label"] for c in front_cells],
                textposition="top right",
                hoverinfo="skip",
            )
        )
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    ax.xaxis.set_major_locator(AutoLocator())
    for k, (init, cells) in enumerate(series.items()):
        ys = np.array([c["forecast"]["loss"] for c in cells])
        spread = np.array([[y - c["forecast"]["low"], c["forecast"]["high"] - y] for y, c in zip(ys, cells)]).T
        ax.errorbar(
            [c["x"] for c in cells],
            ys,
            yerr=spread.reshape(2, -1),
            fmt="o",
            capsize=3,
            label=init,
            color=SERIES_COLORS[k % len(SERIES_COLORS)],
        )
    ax.plot(
        [c["x"] for c in front_cells],
        [c["forecast"]["loss"] for c in front_cells],
        color=FRONT_COLOR,
        lw=2,
        label="Pareto front",
    )
    for c in front_cells:
        ax.annotate(c["label"], (c["x"], c["forecast"]["loss"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.legend(frameon=False, fontsize=9)
    return fig


def forecast_band_curves(curve: Any, result: Any) -> tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """:func:`forecast_band`'s title and its three curves as (name, x, y), in drawing order: the interval as a
    closed band, the forecast, the evaluated losses. A live figure takes new data from these without being
    rebuilt (arrays: plotly sends them as binary buffers, where it validates a list value by value)."""
    points = list(zip(curve.steps, curve.losses)) if hasattr(curve, "lrs") else [(r.step, r.loss) for r in curve.evals]
    points = [(s, v) for s, v in points if s > 0]  # before training the areas are 0: not on the forecast's scale
    title = (
        f"Forecast{' of ' + result.label if result.label else ''}: {result.loss:.3f} nats at step {result.horizon:,}"
    )
    xs, loss, low, high = (
        np.asarray(values, dtype=float)
        for values in (result.curve_steps, result.curve_loss, result.curve_low, result.curve_high)
    )
    evaluated = np.asarray(points, dtype=float).reshape(-1, 2)
    return title, [
        (f"{result.level:.0%} interval", np.concatenate([xs, xs[::-1]]), np.concatenate([high, low[::-1]])),
        ("forecast", xs, loss),
        ("evaluated", evaluated[:, 0], evaluated[:, 1]),
    ]


def forecast_band(curve: Any, result: Any, backend: str = "plotly") -> Figure:
    """A run's evaluated held-out losses and its forecast ahead of them, with the interval as a band.

    Args:
        curve: the :class:`~subclone_viz.forecast.LearningCurve` (or a training history) that was forecast.
        result: the :class:`~subclone_viz.forecast.Forecast`.
        backend: ``"plotly"`` or ``"matplotlib"``.
    """
    _check_backend(backend)
    title, (band, line, evaluated) = forecast_band_curves(curve, result)
    xlabel, ylabel = "optimizer step", HISTORY_METRICS["eval_loss"]
    if backend == "plotly":
        fig = _plotly_figure(title, xlabel, ylabel)
        fig.add_trace(
            go.Scatter(
                x=band[1],
                y=band[2],
                fill="toself",
                name=band[0],
                mode="lines",
                line=dict(width=0),
                fillcolor="rgba(214,39,40,0.18)",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=line[1], y=line[2], name=line[0], mode="lines", line=dict(color=SELECTED_COLOR, dash="dash", width=2)
            )
        )
        fig.add_trace(
            go.Scatter(
                x=evaluated[1],
                y=evaluated[2],
                name=evaluated[0],
                mode="markers",
                marker=dict(color=SERIES_COLORS[0], size=7),
            )
        )
        fig.add_vline(x=result.fitted_until, line=dict(color=REMOVED_COLOR, dash="dot"))
        return fig
    fig, ax = _matplotlib_figure(title, xlabel, ylabel)
    xs = result.curve_steps
    ax.fill_between(xs, result.curve_low, result.curve_high, color=SELECTED_COLOR, alpha=0.18, lw=0, label=band[0])
    ax.plot(xs, result.curve_loss, color=SELECTED_COLOR, ls="--", lw=2, label=line[0])
    ax.plot(evaluated[1], evaluated[2], "o", color=SERIES_COLORS[0], ms=5, label=evaluated[0])
    ax.axvline(result.fitted_until, color=REMOVED_COLOR, ls=":", lw=1)
    ax.legend(frameon=False, fontsize=9)
    return fig
