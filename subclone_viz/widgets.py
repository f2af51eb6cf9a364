"""Interactive explorers for notebooks: the figures of :mod:`subclone_viz.plots`, driven by ipywidgets.

Each explorer is a thin shell over library calls: it reads its controls, calls ``plan``, ``subclone``,
``evaluate``, ``token_trace``, ``size_grid`` or ``compare``, and shows the records they return with the
figures of :mod:`subclone_viz.plots`, wrapped in plotly ``FigureWidget``s (which need ``anywidget``; nothing
loads from a CDN). Figures are updated in place, so the front end redraws without re-creating them.

* :class:`ResidualExplorer`: the three per-block residual metrics, the single-block ablation beside them,
  and one token's trace through depth (a text box, a token picker and a layer slider);
* :class:`ImportanceExplorer`: residual-channel importance (log colour), massive channels, rank consistency
  between layers (Spearman or top-k, with a k slider), FFN neuron importance per layer, head importance;
* :class:`SubcloneStudio`: pick a destination (layers, depth strategy, widths offered only at valid values,
  width and scaling strategies) and watch which blocks it keeps; Subclone evaluates and saves it; Train
  runs :func:`~subclone_viz.compare.compare` in a background thread with live loss curves; Stop stops it;
* :class:`SizeGridExplorer`: parameters, FLOPs per token and untrained loss over a grid of sizes; clicking
  a cell (or :meth:`SizeGridExplorer.select`) sends that size to a linked studio;
* :class:`StabilityExplorer`: how often each residual channel, FFN neuron and head is kept across resamples
  of the calibration sample (:func:`~subclone_viz.stability.stability`), and the loss spread it implies;
* :class:`Explorer`: all of the above in tabs;
* :class:`BudgetExplorer`: forecast loss at a training budget against an inference cost, from a
  :func:`~subclone_viz.budget.budget_grid`; the budget slider re-forecasts from the cached pilots.

Every explorer exposes its root container as ``.widget`` (and displays itself as the last expression of
a cell) and its controls and figures as attributes, so code and tests can drive it without a browser. The
results live on the Python side too (``.trace``, ``.plan``, ``.last_result``, ``.comparison``...).

Example::

    >>> import subclone_viz as sv
    >>> from subclone_viz.widgets import Explorer
    >>> parent = sv.load_parent("smollm2-135m")
    >>> train = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, shuffle=True)
    >>> heldout = sv.text_batches("builtin", parent.tokenizer, seq_len=32, batch_size=2, split="heldout",
    ...                           max_batches=1)
    >>> prof = sv.profile(parent, train, max_tokens=256, progress=False)   # a shuffled, document-diverse sample
    >>> explorer = Explorer(parent, prof, train, eval_batches=heldout, grid_layers=[20, 30], grid_hidden=[576])
    >>> explorer.studio.plan.summary()       # the studio starts at the default destination
    '20 layers (parent blocks [0, ..., 29]), hidden 384, ...'
    >>> explorer.sizes.select(0, 0)          # what a click on a size-grid cell does
    DestinationSpec(layers=20, hidden=576, ffn=None, heads=None, kv_heads=None)

In a notebook, ``explorer`` as a cell's last expression shows the tabs (``Explorer(parent, prof, train,
eval_batches=heldout)`` computes the full size grid).
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go
from IPython.display import display

from . import plots
from .compare import INITS, Comparison, compare, speedup_text
from .errors import UserError
from .evaluate import BlockAblation, evaluate
from .export import save_destination
from .forecast import MIN_POINTS, Forecast, forecast
from .importance import DEFAULT_ESTIMATOR, available_estimators
from .lens import READABLE_TASKS, logit_lens
from .outputs import generate, token_losses
from .plan import (
    DEPTH_STRATEGIES,
    SCALINGS,
    WIDTH_STRATEGIES,
    DestinationSpec,
    SpecError,
    SubclonePlan,
    plan,
    spec_choices,
)
from .profile import BLOCK_METRIC_LABELS, BLOCK_METRICS, Profile
from .settings import INTERACTIVE_STEPS, PlanStrategy
from .similarity import layer_similarity
from .sizing import COSTS, QUANTITIES, SizeGrid, size_grid
from .stability import METHODS, Stability, stability
from .subclone import subclone
from .trace import TokenTrace, token_trace, token_traces
from .train import History
from .workflow import default_destination, has_loss

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .parent import Parent

log = logging.getLogger(__name__)

Batches = Iterable[dict[str, "torch.Tensor"]]

DEFAULT_TEXT = "Weight subcloning starts a small transformer from the weights of a larger pretrained one."
DEFAULT_SAVE_DIR = "subclones"
DEFAULT_INITS = ("random", "subclone")
LESSON_STEPS = INTERACTIVE_STEPS  # a lesson's run: about three minutes of a laptop core (settings.INTERACTIVE_STEPS)
LONGER_RUN = 5  # the longer run the studio offers: this many times the lesson's steps
LESSON_BATCHES = {"seq_len": 64, "batch_size": 4}  # text_batches(...) arguments of the lesson's training batches
LIVE_REFRESH_SECONDS = 0.5  # at most this often a running training redraws its curves
# The token picker traces at most this many tokens (a paragraph): one forward pass of SmolLM2 over them takes
# well under a second on a laptop core, and a longer text would make a dropdown nobody can use.
MAX_TRACE_TOKENS = 256
CACHED_TEXTS = 8  # texts whose traces the token picker keeps: going back to one redraws without the model
FIGURE_CACHE = 64  # figures an explorer keeps per control value (a few hundred kB each at most)
# Pixels. A FigureWidget's front end draws at a fixed size (it does not follow its box), so every figure gets
# one; rows of figures wrap on screens too narrow for them side by side.
FULL_WIDTH = 1150
HALF_WIDTH = 570
THIRD_WIDTH = 380
TRACE_WIDTH = 900  # the token trace fits JupyterLab's notebook area with the file browser open on a laptop
_LABEL_STYLE = {"description_width": "initial"}


def _figure(figure: go.Figure, width: int) -> go.FigureWidget:
    figure.update_layout(width=width)
    return go.FigureWidget(figure)


def _refresh(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Show ``figure`` in ``widget`` at the widget's width: traces restyled or replaced, the layout brought to
    ``figure``'s, all in one message where the traces keep their number and types.

    Traces of the same number and types are restyled in place: inside ``batch_update`` that is one
    ``Plotly.update`` and one redraw in the browser, where replacing them sends a delete and an add message
    (three redraws a move, with the layout's). Every message redraws the whole figure, however small the edit:
    plotly's front end tags each edit with a property plotly.js does not know (``_doNotReportToPy``), which it
    treats as one that needs a full recalculation; so the messages per figure are what a redraw costs. Only the properties
    that differ are sent: plotly validates a property on every assignment, and re-assigning the unchanged template
    alone took most of a redraw (about 40 ms a figure). Properties that ``figure`` lacks are cleared explicitly
    (an empty tuple for the array containers such as shapes, None for the others): the browser's widget model and
    plotly.js *merge* a message into what they hold, so a property the message does not name stays drawn (the
    grey bands of removed blocks, once every block is kept) although the Python side has none.
    """
    figure.update_layout(width=widget.layout.width)
    current, wanted = widget.layout, figure.layout
    shown, wanted_keys = current.to_plotly_json(), wanted.to_plotly_json().keys()
    with widget.batch_update():
        if _same_kinds(widget.data, figure.data):
            _restyle(widget.data, figure.data)
        else:
            widget.data = ()
            widget.add_traces(figure.data)
        for key in shown.keys() - wanted_keys:
            if shown[key] not in ([], {}, None):  # cleared before
                current[key] = () if isinstance(current[key], tuple) else None
        for key in wanted_keys:
            if key not in shown or current[key] != wanted[key]:
                current[key] = wanted[key]
    _store_state(widget)


def _store_state(widget: go.FigureWidget) -> None:
    """Keep the figure ``widget`` shows in its state. plotly sends an update as a one-off message to the views
    open now, and stores the whole figure in the widget's state only when the figure itself is displayed, never
    when a box or a tab holding it is: a view opened later (a Voila page, which connects after the notebook ran;
    a tab drawn after the update) would start from the figure as it was built."""
    widget._widget_layout = deepcopy(widget._layout_obj._props)
    widget._widget_data = deepcopy(widget._data)


def _same_kinds(shown: tuple, wanted: tuple) -> bool:
    """Whether ``wanted`` has as many traces as ``shown``, of the same types, in order: then they are restyled."""
    return len(shown) == len(wanted) > 0 and all(old.type == new.type for old, new in zip(shown, wanted))


def _restyle(shown: tuple, wanted: tuple) -> None:
    """Bring each shown trace to its wanted one: changed properties assigned, those it lacks cleared (None).
    Nothing is sent for a trace left equal (a moved marker or outline leaves the traces as they are)."""
    for old, new in zip(shown, wanted):
        current, target = old.to_plotly_json(), new.to_plotly_json()
        for key in current.keys() - target.keys() - {"uid", "type"}:
            old[key] = None
        for key in target.keys() - {"uid", "type"}:
            if key not in current or not _equal(current[key], target[key]):
                old[key] = new[key]


def _equal(shown: Any, wanted: Any) -> bool:
    """Whether two values of a trace property are the same, arrays (also inside dicts and lists) compared element
    by element."""
    if isinstance(shown, np.ndarray) or isinstance(wanted, np.ndarray):
        return np.shape(shown) == np.shape(wanted) and bool(np.array_equal(shown, wanted))
    if isinstance(shown, dict) and isinstance(wanted, dict):
        return shown.keys() == wanted.keys() and all(_equal(shown[k], wanted[k]) for k in shown)
    if isinstance(shown, (list, tuple)) and isinstance(wanted, (list, tuple)):
        return len(shown) == len(wanted) and all(_equal(a, b) for a, b in zip(shown, wanted))
    return bool(shown == wanted)


def _set_curves(widget: go.FigureWidget, curves: Sequence[tuple[str, Any, Any]], layout: dict | None = None) -> bool:
    """Give the traces ``widget`` shows new x and y (and the layout the properties ``layout`` maps by plotly.js
    path, such as "title.text" or "shapes[0].x0") in one message, without building a new figure (most of a
    redraw's time). Only where it shows the same named traces in the same order, every one with points, and
    ``curves`` (name, x, y) all have points: a figure drawn without data carries a note and hidden axes, so it is
    rebuilt. Returns whether it did.
    """
    shown = [trace for trace in widget.data if trace.x is not None and len(trace.x)]
    if [trace.name for trace in shown] != [name for name, _, _ in curves] or len(shown) != len(widget.data):
        return False
    if not all(len(xs) for _, xs, _ in curves):
        return False
    widget.plotly_update(
        restyle_data={"x": [xs for _, xs, _ in curves], "y": [ys for _, _, ys in curves]},
        relayout_data=layout or {},
        trace_indexes=list(range(len(curves))),
    )
    _store_state(widget)
    return True


def _size_slider(
    options: Sequence[Any], value: Any, description: str, layout: w.Layout, disabled: bool = False
) -> w.SelectionSlider:
    """A destination-size slider: it acts when released, not while dragged (each value re-plans a destination)."""
    return w.SelectionSlider(
        options=options,
        value=value,
        description=description,
        continuous_update=False,
        style=_LABEL_STYLE,
        layout=layout,
        disabled=disabled,
    )


def _row(*children: w.Widget) -> w.HBox:
    return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))


def _message(text: str, error: bool = False, css_class: str = "") -> str:
    """Plain text as HTML; ``css_class`` lets a page (or a browser test) find it."""
    color = "#b00020" if error else "#333333"
    return f'<div class="{css_class}" style="color:{color}; white-space:pre-wrap">{html.escape(text)}</div>'


def _heading(text: str, level: int = 3) -> w.HTML:
    return w.HTML(f"<h{level} style='margin:0.4em 0 0.2em 0'>{html.escape(text)}</h{level}>")


def _caption(text: str) -> w.HTML:
    return w.HTML(f"<div style='color:#555; font-size:0.92em; max-width:60em'>{text}</div>")


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return html.escape("" if value is None else str(value))

    head = "".join(f"<th style='padding:2px 10px'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 10px'>{cell(row.get(c))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _has_tokenizer(parent: "Parent") -> bool:
    # An image parent's processor is its preprocessing config, not something that tokenizes text.
    return callable(parent.tokenizer)


def _one_line(error: BaseException) -> str:
    """An exception as one line for a view: the user's mistakes (:class:`UserError`, ``ValueError``) as their
    message, anything else with its type, since it is a bug the message alone would not explain."""
    text = " ".join(str(error).split()) or "(no message)"
    if isinstance(error, (UserError, ValueError, OSError)):  # OSError: a folder that cannot be written
        return text
    return f"{type(error).__name__}: {text} (a bug: the log has the traceback)"


class _App:
    """An explorer: ``.widget`` is its root container, shown when the explorer is a cell's last value.

    A control's callback has no caller to raise to: :meth:`_guard` wraps each one so that any error shows as one
    line in the explorer (``target``) and lands in ``.last_error`` (None after a callback that succeeds).
    """

    widget: w.Widget
    last_error: str | None = None
    _callbacks_running = 0  # a callback's own control changes fire callbacks inside it

    def _ipython_display_(self) -> None:
        display(self.widget)

    def _figure_for(self, key: Any, make: Any) -> go.Figure:
        """The figure ``make()`` draws for ``key``, drawn once: a control set back to a value it had redraws
        without recomputing (the records behind the figures never change under an explorer)."""
        cache = self.__dict__.setdefault("_figures", {})
        if key not in cache:
            if len(cache) >= FIGURE_CACHE:
                cache.pop(next(iter(cache)))
            cache[key] = make()
        return cache[key]

    def _guard(self, callback: Any, target: w.HTML, on_error: Any = None) -> Any:
        """``callback`` that shows its errors in ``target`` instead of raising; ``on_error()`` then resets the
        view so that it shows nothing the error left half-done."""

        def guarded(*args: Any) -> None:
            outermost = self._callbacks_running == 0
            if outermost:
                self.last_error = None
            self._callbacks_running += 1
            try:
                callback(*args)
                if outermost and self.last_error is None and 'class="widget-error"' in target.value:
                    target.value = ""  # the error an earlier call showed is gone
            except Exception as error:  # noqa: BLE001 - shown in the view; the traceback goes to the log
                if not isinstance(error, (UserError, ValueError)):
                    log.exception("a widget callback failed")
                self.last_error = _one_line(error)
                target.value = _message(self.last_error, error=True, css_class="widget-error")
                if on_error is not None:
                    on_error()
            finally:
                self._callbacks_running -= 1

        return guarded


# --------------------------------------------------------------------------------------------------------
# The additive residual property


class ResidualExplorer(_App):
    """The additive residual property: per-block metrics, the block ablation and one token's trace.

    Args:
        parent: the parent the profile was measured on (the token trace runs it).
        profile: its profile.
        ablation: :func:`~subclone_viz.block_ablation` of the parent, shown beside the metrics when given.
        text: the starting text of the token picker (text parents).
        batch: for parents without a tokenizer (images): a batch whose images the picker offers; the trace
            follows each image's first token (the class token of a ViT).
    """

    def __init__(
        self,
        parent: "Parent",
        profile: Profile,
        ablation: BlockAblation | None = None,
        text: str = DEFAULT_TEXT,
        batch: dict[str, "torch.Tensor"] | None = None,
    ):
        self.parent, self.profile, self.ablation, self.batch = parent, profile, ablation, batch
        self.metric = w.Dropdown(
            options=[(BLOCK_METRIC_LABELS[name], name) for name in BLOCK_METRICS] + [("all three", "all")],
            value="f_over_sum",
            description="metric",
            style=_LABEL_STYLE,
        )
        self.residual_figure = _figure(plots.residual_ratio(profile, self.metric.value), HALF_WIDTH)
        self.metric_message = w.HTML()
        self.metric.observe(self._guard(self._show_metric, self.metric_message), names="value")
        if ablation is not None:
            self.ablation_figure: go.FigureWidget | None = _figure(plots.block_ablation(ablation), HALF_WIDTH)
            right: w.Widget = self.ablation_figure
        else:
            self.ablation_figure = None
            right = w.Box(
                [
                    _caption(
                        "No block ablation was passed: compute one with <code>sv.block_ablation(parent, "
                        "heldout_batches)</code> to see the loss with each block removed or duplicated."
                    )
                ],
                layout=w.Layout(width=f"{HALF_WIDTH}px", padding="3em 0 0 1em"),
            )

        self.trace: TokenTrace | None = None
        self._drawn_trace: TokenTrace | None = None  # the trace the figure shows now
        self.trace_message = w.HTML()  # the trace's errors and busy sign
        self._repicking = False
        self._traces: dict[Any, dict[int, TokenTrace]] = {}  # text (or image) -> position -> trace
        self.text: w.Text | None = None
        if _has_tokenizer(parent):
            self.text = w.Text(
                value=text,
                description="text",
                continuous_update=False,
                placeholder=f"type a sentence (at most {MAX_TRACE_TOKENS} tokens) and press Enter",
                layout=w.Layout(width="100%", max_width=f"{TRACE_WIDTH}px"),
                style=_LABEL_STYLE,
            )
            self.text.observe(self._guard(self._retokenize, self.trace_message, self._clear_trace), names="value")
            self.token = w.Dropdown(description="token", options=[], style=_LABEL_STYLE)
        elif batch is not None:
            labels = batch.get("labels")
            count = len(next(v for v in batch.values() if hasattr(v, "shape")))
            self.token = w.Dropdown(
                description="image",
                style=_LABEL_STYLE,
                options=[
                    (f"image {i}" + (f" (label {int(labels[i])})" if labels is not None else ""), i)
                    for i in range(count)
                ],
            )
        else:
            self.token = w.Dropdown(description="token", options=[], disabled=True)
        # Redrawn when the drag ends: while dragging, every position passed would queue a redraw of its own.
        self.layer = w.IntSlider(
            value=profile.num_layers // 2,
            min=0,
            max=profile.num_layers,
            description="residual layer",
            continuous_update=False,
            style=_LABEL_STYLE,
            layout=w.Layout(width="60%"),
        )
        self.layer_readout = w.HTML()
        self.trace_figure = _figure(plots.placeholder("One token through depth", "no text traced yet"), TRACE_WIDTH)
        self.token.observe(self._guard(self._show_trace, self.trace_message, self._clear_trace), names="value")
        self.layer.observe(self._guard(self._show_layer, self.trace_message), names="value")
        if self.text is not None:
            self._guard(self._retokenize, self.trace_message, self._clear_trace)()
        elif batch is not None:
            self._guard(self._show_trace, self.trace_message, self._clear_trace)()

        picker = [c for c in (self.text, self.token) if c is not None]
        readable = parent.family.task in READABLE_TASKS and (self.text is not None or batch is not None)
        self.depth = PredictionsThroughDepth(parent, text, batch) if readable else None
        self.widget = w.VBox(
            [
                _heading("The additive residual property: y = x + f(x), with f(x) small"),
                self.metric,
                self.metric_message,
                _row(self.residual_figure, right),
                _heading("One token through depth", 4),
                *picker,
                self.layer,
                self.layer_readout,
                self.trace_message,
                self.trace_figure,
                *([self.depth.widget] if self.depth is not None else []),
            ]
        )

    def _show_metric(self, change: Any = None) -> None:
        metric = self.metric.value
        _refresh(
            self.residual_figure,
            self._figure_for(("metric", metric), lambda: plots.residual_ratio(self.profile, metric)),
        )

    def _checked_text(self) -> str:
        """The text box's text, refused up front when it is empty or longer than :data:`MAX_TRACE_TOKENS`."""
        text = self.text.value
        if not text.strip():
            raise UserError("the text box is empty: type a sentence to trace, then press Enter")
        # Counting tokens is quick; a pasted book is refused before even that.
        count = len(text) // 16 if len(text) > 16 * MAX_TRACE_TOKENS else len(self.parent.tokenizer(text)["input_ids"])
        if count > MAX_TRACE_TOKENS:
            raise UserError(
                f"the text is {'over ' if len(text) > 16 * MAX_TRACE_TOKENS else ''}{count} tokens "
                f"long ({len(text):,} characters): the picker traces at most {MAX_TRACE_TOKENS}; "
                f"shorten it to a sentence or a paragraph"
            )
        return text

    def _traces_of(self, key: Any, compute: Any) -> dict[int, TokenTrace]:
        """Every position's trace of ``key`` (a text or an image index), from the cache or one forward pass."""
        if key not in self._traces:
            self.trace_message.value = _message("running the model...", css_class="trace-busy")
            traces = {trace.token_index: trace for trace in compute()}
            if len(self._traces) >= CACHED_TEXTS:
                self._traces.pop(next(iter(self._traces)))
            self._traces[key] = traces
        return self._traces[key]

    def _retokenize(self, change: Any = None) -> None:
        """Trace every token of the new text (one forward pass), offer them in the picker, show the last one."""
        text = self._checked_text()
        traces = self._traces_of(text, lambda: token_traces(self.parent, text))
        trace = traces[max(traces)]
        self.trace_message.value = ""
        options = [(_token_label(trace, i), i) for i in traces]
        self.trace = trace
        self._repicking = True  # new options select their first token: not a choice to trace
        try:
            self.token.options = options
            self.token.value = trace.token_index
        finally:
            self._repicking = False
        self.last_error = None
        self._draw_trace()

    def _show_trace(self, change: Any = None) -> None:
        if self._repicking or self.token.value is None:
            return
        if self.text is not None:
            text = self._checked_text()
            trace = self._traces_of(text, lambda: token_traces(self.parent, text))[self.token.value]
        else:
            index = self.token.value
            trace = self._traces_of(
                index, lambda: [token_trace(self.parent, self.batch, token_index=0, sequence_index=index)]
            )[0]
        self.trace_message.value = ""
        self.trace = trace
        self.last_error = None
        self._draw_trace()

    def _clear_trace(self) -> None:
        """After an error: no token, no trace, a placeholder where the trace was (nothing left from an old text)."""
        self.trace = None
        if self.text is not None:
            self._repicking = True
            try:
                self.token.options = []
            finally:
                self._repicking = False
        self.layer_readout.value = ""
        self._drawn_trace = None
        _refresh(
            self.trace_figure, plots.placeholder("One token through depth", "nothing traced: see the message above")
        )

    def _show_layer(self, change: Any = None) -> None:
        self._draw_trace()

    def _draw_trace(self) -> None:
        trace, layer = self.trace, self.layer.value
        if trace is None:
            return
        shown = self._drawn_trace
        if shown is not None and shown is not trace and shown.num_layers == trace.num_layers:
            # Another token: the same figure with new curves (building a new one costs a redraw's time).
            with self.trace_figure.batch_update():
                for curve, values in zip(
                    self.trace_figure.data, (trace.norms, trace.cos_to_previous, trace.cos_to_final, trace.f_over_sum)
                ):
                    curve.y = values
                self.trace_figure.layout.title.text = plots.token_trace_title(trace)
        elif shown is not trace:
            _refresh(self.trace_figure, plots.token_trace(trace))
        self._drawn_trace = trace  # a new layer only moves the marker
        marker = dict(
            type="line", x0=layer, x1=layer, y0=0, y1=1, line=dict(color=plots.SELECTED_COLOR, width=2, dash="dot")
        )
        self.trace_figure.layout.shapes = [
            {**marker, "xref": x, "yref": f"{y} domain"} for x, y in (("x", "y"), ("x2", "y2"))
        ]
        parts = [
            f"residual layer {layer}: ||h|| = {trace.norms[layer]:.3g}",
            f"cos to the last layer = {trace.cos_to_final[layer]:.3f}",
        ]
        if layer > 0:
            parts.append(
                f"block {layer - 1}: cos(input, output) = {trace.cos_to_previous[layer - 1]:.3f}, "
                f"||f(x)|| / ||x + f(x)|| = {trace.f_over_sum[layer - 1]:.3f}"
            )
        self.layer_readout.value = _message("; ".join(parts))


# --------------------------------------------------------------------------------------------------------
# Neuron importance


class ImportanceExplorer(_App):
    """Why one ranking of the residual channels serves every layer, and the per-layer FFN and head rankings."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.message = w.HTML()
        width = profile.residual_importance.shape[1]
        self.log = w.Checkbox(value=True, description="log colour scale", indent=False)
        self.channel_figure = _figure(plots.channel_heatmap(profile, log=True), FULL_WIDTH)
        self.log.observe(self._guard(self._show_channels, self.message), names="value")

        self.massive_count = w.IntSlider(
            value=min(8, width),
            min=1,
            max=min(16, width),
            description="channels",
            continuous_update=False,
            style=_LABEL_STYLE,
        )
        self.massive_figure = _figure(plots.massive_activations(profile, self.massive_count.value), HALF_WIDTH)
        self.massive_count.observe(self._guard(self._show_massive, self.message), names="value")

        self.kind = w.ToggleButtons(
            options=[("Spearman", "spearman"), ("top-k overlap", "topk")],
            value="spearman",
            style={"button_width": "110px"},
        )
        self.k = w.IntSlider(
            value=max(1, width // 4),
            min=1,
            max=width,
            description="k",
            continuous_update=False,
            disabled=True,
            style=_LABEL_STYLE,
        )
        self.consistency_figure = _figure(plots.rank_consistency(profile, self.k.value, self.kind.value), HALF_WIDTH)
        self.kind.observe(self._guard(self._show_consistency, self.message), names="value")
        self.k.observe(self._guard(self._show_consistency, self.message), names="value")

        self.ffn_layer = w.IntSlider(
            value=0, min=0, max=profile.num_layers - 1, description="block", continuous_update=False, style=_LABEL_STYLE
        )
        self.ffn_figure = _figure(plots.ffn_importance(profile, self.ffn_layer.value), HALF_WIDTH)
        self.ffn_layer.observe(self._guard(self._show_ffn, self.message), names="value")

        self.head_figure = _figure(plots.head_importance(profile), HALF_WIDTH)

        self.widget = w.VBox(
            [
                _heading("Residual channels: one ranking for every layer"),
                self.message,
                self.log,
                self.channel_figure,
                _row(
                    w.VBox([self.massive_count, self.massive_figure]),
                    w.VBox([w.HBox([self.kind, self.k]), self.consistency_figure]),
                ),
                _heading("Off the residual stream: FFN neurons and heads, ranked per block"),
                _row(w.VBox([self.ffn_layer, self.ffn_figure]), self.head_figure),
                *self._expert_section(profile),
            ]
        )

    def _expert_section(self, profile: Profile) -> list[w.Widget]:
        """A mixture of experts' routing: the layer x expert load, and one block's experts' neuron curves."""
        if "expert_tokens" not in profile.stats:
            return []
        moe_blocks = [b for b, tokens in enumerate(profile.stats["router_tokens"]) if tokens > 0]
        self.expert_layer = w.SelectionSlider(
            options=moe_blocks, value=moe_blocks[0], description="block", continuous_update=False, style=_LABEL_STYLE
        )
        self.expert_load_figure = _figure(plots.expert_load_heatmap(profile), HALF_WIDTH)
        self.expert_neuron_figure = _figure(plots.expert_neuron_curves(profile, moe_blocks[0]), HALF_WIDTH)
        self.expert_layer.observe(
            lambda change: _refresh(
                self.expert_neuron_figure, plots.expert_neuron_curves(self.profile, self.expert_layer.value)
            ),
            names="value",
        )
        return [
            _heading("Experts: routing load per block, and each expert's neurons on its routed tokens"),
            _row(self.expert_load_figure, w.VBox([self.expert_layer, self.expert_neuron_figure])),
        ]

    def _show_channels(self, change: Any = None) -> None:
        log = self.log.value
        _refresh(
            self.channel_figure,
            self._figure_for(("channels", log), lambda: plots.channel_heatmap(self.profile, log=log)),
        )

    def _show_massive(self, change: Any = None) -> None:
        count = self.massive_count.value
        _refresh(
            self.massive_figure,
            self._figure_for(("massive", count), lambda: plots.massive_activations(self.profile, count)),
        )

    def _show_consistency(self, change: Any = None) -> None:
        # k only changes the top-k overlap; the Spearman matrix ranks every channel.
        kind, k = self.kind.value, self.k.value
        self.k.disabled = kind == "spearman"
        key = ("consistency", kind, k if kind == "topk" else None)
        _refresh(self.consistency_figure, self._figure_for(key, lambda: plots.rank_consistency(self.profile, k, kind)))

    def _show_ffn(self, change: Any = None) -> None:
        block = self.ffn_layer.value
        _refresh(self.ffn_figure, self._figure_for(("ffn", block), lambda: plots.ffn_importance(self.profile, block)))


# --------------------------------------------------------------------------------------------------------
# Subcloning and training


@dataclass
class SubcloneResult:
    """What the Subclone button made: the destination, its size, its untrained held-out score and where it went."""

    plan: SubclonePlan
    model: "nn.Module"
    params: int
    loss: float | None  # None for a bare encoder, which has no loss
    accuracy: float | None
    path: Path
    seconds: float


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name).strip("-.") or "parent"


class SubcloneStudio(_App):
    """Choose a destination, subclone and save it, and train it against other initializations.

    Args:
        parent: the loaded parent.
        profile: its profile (the importance rankings and the residual metric).
        batches: training batches (also the calibration data of ``scaling="calibrated"``).
        eval_batches: held-out batches for the loss after subcloning and the loss curves (default ``batches``).
        save_dir: the directory destinations are saved under, one subdirectory each (editable in the widget).
        steps: training steps per initialization of the lesson-sized run (editable in the widget).
        longer_steps: the longer run offered beside it (default ``LONGER_RUN`` times ``steps``).
        inits: the initializations selected at first (any of :data:`~subclone_viz.compare.INITS`).
        train_options: passed on to :func:`~subclone_viz.compare.compare` (e.g. ``eval_every``, ``lrs``).
    """

    def __init__(
        self,
        parent: "Parent",
        profile: Profile,
        batches: Batches,
        eval_batches: Batches | None = None,
        save_dir: str | Path = DEFAULT_SAVE_DIR,
        steps: int = LESSON_STEPS,
        inits: Sequence[str] = DEFAULT_INITS,
        longer_steps: int | None = None,
        **train_options: Any,
    ):
        self.parent, self.profile = parent, profile
        self.batches = batches
        self.eval_batches = eval_batches if eval_batches is not None else batches
        self.train_options = train_options
        self.has_loss = has_loss(parent)
        choices = spec_choices(parent)
        self.plan: SubclonePlan | None = None
        self.plan_error: str | None = None
        self.last_result: SubcloneResult | None = None
        self.last_error: str | None = None
        self.comparison: Comparison | None = None
        self.live_histories: dict[str, History] = {}
        self.training_thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self._syncing = False
        self._last_draw = 0.0

        wide = w.Layout(width="95%")
        start = default_destination(parent)
        self.layers = w.IntSlider(
            value=start.layers,
            min=min(choices["layers"]),
            max=max(choices["layers"]),
            description="blocks",
            continuous_update=False,
            style=_LABEL_STYLE,
            layout=wide,
        )
        self.depth = w.Dropdown(
            options=DEPTH_STRATEGIES, value=PlanStrategy().depth, description="depth strategy", style=_LABEL_STYLE
        )
        self.hidden = _size_slider(choices["hidden"], start.hidden, "hidden d'", wide)
        self.ffn = _size_slider(choices["ffn"], choices["ffn"][-1], "FFN", wide)
        self.heads = _size_slider(
            choices["heads"], choices["heads"][-1], "heads", wide, disabled=parent.family.heads_follow_hidden
        )
        # Mixtures of experts: routed experts kept per layer (hidden for dense parents).
        experts = choices.get("experts", [0])
        self.experts = _size_slider(
            experts, experts[-1], "experts", wide if parent.dims.experts else w.Layout(display="none")
        )
        self.width = w.Dropdown(
            options=WIDTH_STRATEGIES, value=PlanStrategy().width, description="width strategy", style=_LABEL_STYLE
        )
        self.scaling = w.Dropdown(
            options=SCALINGS, value=PlanStrategy().scaling, description="scaling", style=_LABEL_STYLE
        )
        self.importance = w.Dropdown(
            options=available_estimators(profile), value=DEFAULT_ESTIMATOR, description="importance", style=_LABEL_STYLE
        )
        self.plan_summary = w.HTML()
        self.residual_figure = _figure(plots.residual_ratio(profile), FULL_WIDTH - 440)

        self.save_dir = w.Text(value=str(save_dir), description="save under", style=_LABEL_STYLE)
        self.overwrite = w.Checkbox(value=False, description="overwrite", indent=False)
        self.subclone_button = w.Button(description="Subclone", button_style="primary", icon="cut")
        self.result = w.HTML()

        self.inits = w.SelectMultiple(
            options=list(INITS), value=tuple(inits), description="inits", rows=min(len(INITS), 6), style=_LABEL_STYLE
        )
        self.steps = w.BoundedIntText(
            value=steps, min=1, max=1_000_000, description="steps", style=_LABEL_STYLE, layout=w.Layout(width="180px")
        )
        longer = longer_steps or LONGER_RUN * steps
        self.run_length = w.ToggleButtons(
            options=[(f"lesson ({steps} steps)", steps), (f"longer ({longer})", longer)],
            value=steps,
            style={"button_width": "120px"},
            tooltips=["sized to end within minutes", "closer to the paper's claim"],
        )
        self.run_length.observe(lambda change: setattr(self.steps, "value", change["new"]), names="value")
        self._progress: dict[str, list[float]] = {}  # init -> [start, end or nan] in time.monotonic() seconds
        self._inits, self._steps = list(self.inits.value), steps
        self.train_button = w.Button(
            description="Train", button_style="success", icon="play", disabled=not self.has_loss
        )
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.train_status = w.HTML()
        curves = ["train_loss", "eval_loss"]
        if parent.family.task == "image-classification":
            curves.append("eval_accuracy")
        curve_width = HALF_WIDTH if len(curves) == 2 else THIRD_WIDTH
        self.curve_figures = {metric: _figure(plots.loss_curves({}, metric=metric), curve_width) for metric in curves}
        self.forecast_status = w.HTML()
        self.forecast_figure = _figure(plots.loss_curves({}, metric="eval_loss"), HALF_WIDTH)
        self.last_forecast: Forecast | None = None
        self._forecast_of: tuple[str, int] | None = None  # the run and evaluation count last forecast
        self.summary = w.HTML()

        self.hidden.observe(self._guard(self._follow_hidden, self.plan_summary), names="value")
        for control in (
            self.layers,
            self.depth,
            self.hidden,
            self.ffn,
            self.heads,
            self.experts,
            self.width,
            self.scaling,
            self.importance,
        ):
            control.observe(self._guard(self._replan, self.plan_summary, self._forget_plan), names="value")
        self.subclone_button.on_click(self._subclone_clicked)
        self.train_button.on_click(self._guard(lambda _: self.train(), self.train_status))
        self.stop_button.on_click(self._guard(lambda _: self.stop(), self.train_status))
        self._follow_hidden()
        self._replan()

        controls = w.VBox(
            [
                self.layers,
                self.depth,
                self.hidden,
                self.ffn,
                self.heads,
                self.experts,
                self.width,
                self.importance,
                self.scaling,
                self.plan_summary,
            ],
            layout=w.Layout(width="430px"),
        )
        self.subclone_listeners: list[Any] = []  # called with each SubcloneResult (the explorer's lens panel)
        self.trained_models: dict[str, "nn.Module"] = {}
        self.views = CutViews(self)
        self.widget = w.VBox(
            [
                _heading("Choose a destination"),
                _row(controls, self.residual_figure),
                _heading("Subclone it", 4),
                w.HBox([self.save_dir, self.overwrite, self.subclone_button]),
                self.result,
                _heading("Train it against other initializations", 4),
                _caption(
                    "Every initialization trains a destination of the shape above (blocks and widths) on the "
                    "same batches, with the paper's learning rates. Each brings its own strategies: "
                    "<code>subclone</code> is the paper's (middle depth, importance width, sqrt scaling), the "
                    "others its ablations and baselines; the depth, width and scaling menus apply to the "
                    "Subclone button only."
                ),
                w.HBox(
                    [self.inits, w.VBox([self.run_length, self.steps, w.HBox([self.train_button, self.stop_button])])]
                ),
                self.train_status,
                _row(*self.curve_figures.values()),
                self.forecast_status,
                self.forecast_figure,
                self.summary,
                self.views.widget,
            ]
        )

    # ---------------------------------------------------------------- the destination
    def spec(self) -> DestinationSpec:
        """The destination the controls describe."""
        heads = None if self.parent.family.heads_follow_hidden else self.heads.value
        experts = self.experts.value if self.parent.dims.experts else None
        return DestinationSpec(
            layers=self.layers.value, hidden=self.hidden.value, ffn=self.ffn.value, heads=heads, experts=experts
        )

    def show_spec(
        self, spec: DestinationSpec, depth: str | None = None, width: str | None = None, scaling: str | None = None
    ) -> None:
        """Set the controls to ``spec`` (FFN and heads follow the width unless the spec gives them)."""
        with self._held():
            for control, value in ((self.depth, depth), (self.width, width), (self.scaling, scaling)):
                if value is not None:
                    control.value = value
            self.layers.value = spec.layers
            self.hidden.value = spec.hidden
            self._follow_hidden()
            if spec.ffn is not None:
                self.ffn.value = spec.ffn
            if spec.heads is not None and not self.heads.disabled:
                self.heads.value = spec.heads
        self._replan()

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """Change several controls without re-planning after each one."""
        syncing, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = syncing

    def _follow_hidden(self, change: Any = None) -> None:
        """A new width resets FFN and heads to what the spec would default to (the parent's ratios)."""
        dims = DestinationSpec(layers=1, hidden=self.hidden.value).resolve(
            self.parent.dims, self.parent.family.heads_follow_hidden
        )
        with self._held():
            self.ffn.value = dims.ffn
            self.heads.value = dims.heads

    def _replan(self, change: Any = None) -> None:
        if self._syncing:
            return
        self.importance.disabled = self.width.value != "importance"  # only the importance width ranks by it
        try:
            self.plan = plan(
                self.parent,
                self.profile,
                self.spec(),
                depth=self.depth.value,
                width=self.width.value,
                scaling=self.scaling.value,
                importance=self.importance.value,
            )
        except SpecError as error:
            self.plan, self.plan_error = None, str(error)
            self.plan_summary.value = _message(str(error), error=True)
            return
        self.plan_error = self.last_error = None
        d = self.plan.destination_dims
        removed = sorted(set(range(self.parent.dims.layers)) - set(self.plan.layers))
        self.plan_summary.value = _message(
            f"{d.layers} blocks x {d.hidden} wide, FFN {d.ffn}, {d.heads} heads / {d.kv_heads} KV heads\n"
            f"keeps parent blocks {_ranges(self.plan.layers)}" + (f"\nremoves {_ranges(removed)}" if removed else "")
        )
        kept = tuple(self.plan.layers)
        _refresh(
            self.residual_figure,
            self._figure_for(("kept", kept), lambda: plots.residual_ratio(self.profile, kept_layers=list(kept))),
        )

    def _forget_plan(self) -> None:
        """After an unexpected planning error: no plan, so Subclone and Train say so instead of using a stale one."""
        self.plan, self.plan_error = None, self.last_error

    def destination_path(self) -> Path:
        """Where the Subclone button saves the current destination."""
        d = self.plan.destination_dims if self.plan is not None else None
        shape = f"{d.layers}x{d.hidden}-ffn{d.ffn}-h{d.heads}" if d is not None else "invalid"
        name = f"{_slug(self.parent.name)}-{shape}-{self.depth.value}-{self.width.value}-{self.scaling.value}"
        return Path(self.save_dir.value).expanduser() / name

    def subclone(self) -> SubcloneResult | None:
        """Subclone the current plan, score it on the held-out batches and save it (the Subclone button)."""
        if self.plan is None:
            self._fail(self.result, self.plan_error or "no valid destination chosen")
            return None
        problem = self._save_problem()
        if problem is not None:  # before any work: the slicing and scoring take seconds
            self._fail(self.result, problem)
            return None
        self.subclone_button.disabled = True
        self.result.value = _message("subcloning...")
        start = time.perf_counter()
        try:
            chosen = self.plan
            calibration = self.batches if chosen.scaling == "calibrated" else None
            model = subclone(self.parent, chosen, calibration_batches=calibration)
            evaluation = evaluate(model, self.parent.family, self.eval_batches) if self.has_loss else None
            path = save_destination(model, chosen, self.destination_path(), overwrite=self.overwrite.value)
        except FileExistsError:  # made meanwhile (another click, another notebook)
            self._fail(self.result, self._exists_message())
            return None
        except (ValueError, OSError) as error:
            self._fail(self.result, _one_line(error))
            return None
        finally:
            self.subclone_button.disabled = False
        self.last_error = None
        self.last_result = SubcloneResult(
            plan=chosen,
            model=model,
            params=sum(p.numel() for p in model.parameters()),
            loss=evaluation.loss if evaluation else None,
            accuracy=evaluation.accuracy if evaluation else None,
            path=path,
            seconds=time.perf_counter() - start,
        )
        self.result.value = self._describe(self.last_result)
        for listener in self.subclone_listeners:
            listener(self.last_result)
        return self.last_result

    def _save_problem(self) -> str | None:
        """Why the Subclone button cannot save where the 'save under' box says, phrased for the box; or None."""
        folder = self.save_dir.value
        if not folder.strip():
            return "the 'save under' box is empty: type a folder to save destinations in (for example 'subclones')"
        if any(ord(c) < 32 or ord(c) == 127 for c in folder):
            return f"the 'save under' box holds a control character ({folder!r}): type a plain folder name"
        try:
            exists = self.destination_path().exists()
        except OSError as error:  # a name too long, a folder that cannot be read
            return f"cannot save under {_shortened(folder)!r}: {error.strerror}; type another folder in 'save under'"
        return self._exists_message() if exists and not self.overwrite.value else None

    def _exists_message(self) -> str:
        return (
            f"{_shortened(str(self.destination_path()))} already holds this destination: tick 'overwrite' to "
            "replace it, or type another folder in 'save under'"
        )

    def _subclone_clicked(self, button: w.Button) -> None:
        # A click has no caller to raise to: an unexpected error is shown where the result would be, and logged.
        try:
            self.subclone()
        except Exception as error:  # noqa: BLE001
            log.exception("subcloning failed")
            self._fail(self.result, f"subcloning failed: {_one_line(error)}")

    def _describe(self, result: SubcloneResult) -> str:
        lines = [f"<b>{result.params / 1e6:.2f}M parameters</b> ({result.plan.summary()})"]
        if result.loss is not None:
            score = f"held-out loss before training: <b>{result.loss:.3f}</b> nats"
            if result.accuracy is not None:
                score += f", accuracy {result.accuracy:.1%}"
            lines.append(score)
        lines.append(f"saved to <code>{html.escape(str(result.path))}</code> in {result.seconds:.1f} s")
        return "<div class='subclone-result'>" + "<br>".join(lines) + "</div>"

    def _fail(self, target: w.HTML, text: str) -> None:
        self.last_error = text
        target.value = _message(text, error=True)

    # ---------------------------------------------------------------- training
    def train(self) -> threading.Thread | None:
        """Start :func:`~subclone_viz.compare.compare` in a background thread (the Train button)."""
        if self.training_thread is not None and self.training_thread.is_alive():
            return self.training_thread
        if self.plan is None:
            self._fail(self.train_status, self.plan_error or "no valid destination chosen")
            return None
        if not self.inits.value:
            self._fail(self.train_status, f"choose at least one initialization: {', '.join(INITS)}")
            return None
        spec, inits, steps = self.spec(), list(self.inits.value), self.steps.value
        self.stop_event = threading.Event()
        self.comparison, self.live_histories = None, {}
        self._progress, self._inits, self._steps = {}, inits, steps
        self._progress[inits[0]] = [time.monotonic(), math.nan]
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.train_status.value = _message(
            f"training {', '.join(inits)} for {steps} steps each...", css_class="train-status"
        )
        self.summary.value = self.forecast_status.value = ""
        self._forecast_of = None
        self.training_thread = threading.Thread(
            target=self._run, args=(spec, inits, steps), daemon=True, name="subclone-viz-train"
        )
        self.training_thread.start()
        return self.training_thread

    def stop(self) -> None:
        """Stop the running training at its next step (the Stop button)."""
        self.stop_event.set()
        self.train_status.value = _message("stopping at the next step...", css_class="train-status")

    def _run(self, spec: DestinationSpec, inits: list[str], steps: int) -> None:
        try:
            self.comparison = compare(
                self.parent,
                spec,
                self.batches,
                inits=inits,
                steps=steps,
                eval_batches=self.eval_batches,
                profile=self.profile,
                callback=self._on_record,
                stop=self.stop_event,
                trained=self.trained_models,
                **{"progress": False, **self.train_options},
            )
        except Exception as error:  # noqa: BLE001 - a worker thread has no caller to raise to: show it
            log.exception("training failed")
            self._fail(self.train_status, f"training failed: {type(error).__name__}: {error}")
            return
        finally:
            self.train_button.disabled, self.stop_button.disabled = not self.has_loss, True
        self.live_histories = dict(self.comparison.histories)
        self._draw_curves()
        for span in self._progress.values():
            span[1] = span[1] if not math.isnan(span[1]) else time.monotonic()
        state = "stopped early" if self.comparison.stopped_early else "done"
        self.train_status.value = _message(f"training {state}: {self.progress_text()}", css_class="train-status")
        columns = ["init", "lr", "weight_decay", "steps", "initial_loss", "final_loss", "speedup", "speedup_per_second"]
        if self.parent.family.task == "image-classification":
            columns[6:6] = ["initial_accuracy", "final_accuracy"]
        rows = [
            {**row, "speedup": speedup_text(row), "speedup_per_second": speedup_text(row, "speedup_per_second")}
            for row in self.comparison.summary_table()
        ]
        self.summary.value = _table(rows, columns)

    def _on_record(self, history: History, record: Any) -> None:
        self.live_histories[history.label] = history
        now = time.monotonic()
        if history.label not in self._progress:  # the previous init is done: this one started when it ended
            previous = self._inits[self._inits.index(history.label) - 1]
            self._progress[previous][1] = now
            self._progress[history.label] = [now, math.nan]
        if now - self._last_draw >= LIVE_REFRESH_SECONDS:
            self._last_draw = now
            self._draw_curves()
            self.train_status.value = _message(self.progress_text(), css_class="train-status")

    def progress_text(self, now: float | None = None) -> str:
        """Each initialization's progress: step i of N, elapsed time and an estimate of what remains."""
        now = time.monotonic() if now is None else now
        parts, per_init, remaining = [], None, 0.0
        for init in self._inits:
            if init not in self._progress:
                continue
            start, end = self._progress[init]
            history = self.live_histories.get(init)
            step = history.last_step if history is not None else 0
            if not math.isnan(end):
                per_init = end - start
                parts.append(f"{init}: done, {step} steps in {_clock(per_init)}")
                continue
            elapsed = now - start
            left = elapsed / step * (self._steps - step) if step else math.nan
            per_init = elapsed + left if step else per_init
            remaining += 0.0 if math.isnan(left) else left
            parts.append(
                f"{init}: step {step} of {self._steps}, {_clock(elapsed)} elapsed"
                + (f", about {_clock(left)} left" if step else "")
            )
        waiting = [init for init in self._inits if init not in self._progress]
        if waiting:
            parts.append(f"then {', '.join(waiting)}" + (f" (about {_clock(per_init)} each)" if per_init else ""))
            remaining += per_init * len(waiting) if per_init else math.nan
        if remaining > 0 and any(math.isnan(end) for _, end in self._progress.values()):
            parts.append(f"about {_clock(remaining)} left in all")
        return " | ".join(parts)

    def _draw_curves(self) -> None:
        histories = dict(self.live_histories)
        for metric, figure in self.curve_figures.items():
            curves = [(label, *plots.history_series(history, metric)[1:3]) for label, history in histories.items()]
            if not _set_curves(figure, curves):  # the first points of a run, or a new run
                _refresh(figure, plots.loss_curves(histories, metric=metric))
        if histories:
            label, history = list(histories.items())[-1]
            if self._forecast_of != (label, len(history.evals)):  # a forecast changes with evaluations only
                self._forecast_of = (label, len(history.evals))
                self.draw_forecast(label, history)

    def draw_forecast(self, label: str, history: History) -> Forecast | None:
        """Forecast ``history`` (the run training now) to its planned end and draw it ahead of its held-out
        losses with the interval; before :data:`~subclone_viz.forecast.MIN_POINTS` evaluations, say how many
        are still needed. Runs inside the training callback: any error is one line here, never raised."""
        try:
            curve = history.curve()
            needed = MIN_POINTS - len(curve.fit_points[0])
            if needed > 0:
                every = history.config.get("eval_every")
                self.forecast_status.value = _message(
                    f"forecast of {label} at step {curve.total_steps:,}: {needed} more held-out evaluation"
                    f"{'s' if needed > 1 else ''} needed" + (f" (one every {every} steps)" if every else ""),
                    css_class="forecast-status",
                )
                return None
            result = forecast(curve)
            title, curves = plots.forecast_band_curves(curve, result)
            moved = {"title.text": title, "shapes[0].x0": result.fitted_until, "shapes[0].x1": result.fitted_until}
            if len(self.forecast_figure.layout.shapes) != 1 or not _set_curves(self.forecast_figure, curves, moved):
                _refresh(self.forecast_figure, plots.forecast_band(curve, result))
        except Exception as error:  # noqa: BLE001 - the training thread must go on whatever the forecast does
            if not isinstance(error, (UserError, ValueError)):
                log.exception("the forecast failed")
            self.forecast_status.value = _message(
                f"no forecast of {label}: {_one_line(error)}", error=True, css_class="forecast-status"
            )
            return None
        self.last_forecast = result
        self.forecast_status.value = _message(
            f"forecast, not measured: {result.summary()}", css_class="forecast-status"
        )
        return result


def _clock(seconds: float) -> str:
    """3.2 -> '0:03', 754 -> '12:34'; a time not known yet -> '?'."""
    if seconds is None or math.isnan(seconds):
        return "?"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def _shortened(text: str, limit: int = 90) -> str:
    """``text`` with its middle cut out when it is longer than ``limit``, so a message stays one line."""
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]}...{text[-(limit // 2 - 1) :]}"


def _token_label(trace: TokenTrace, index: int) -> str:
    """A picker entry: the position and the token's text, with the text it stands for when that differs (the
    bytes of an emoji split over two tokens)."""
    token = trace.tokens[index] if trace.tokens else ""
    span = trace.spans[index] if trace.spans else token
    return f"{index}: {token!r}" + (
        f" (part of {span.strip()!r})" if span.strip() and span not in (token, token.strip()) else ""
    )


def _ranges(blocks: Sequence[int]) -> str:
    """[0, 1, 2, 5, 5, 7] -> '0-2, 5, 5, 7': compact, and repeats (duplicated blocks) stay visible."""
    parts: list[list[int]] = []
    for b in blocks:
        if parts and b == parts[-1][-1] + 1:
            parts[-1].append(b)
        else:
            parts.append([b])
    return ", ".join(f"{p[0]}-{p[-1]}" if len(p) > 2 else ", ".join(map(str, p)) for p in parts)


# --------------------------------------------------------------------------------------------------------
# Choosing a size


class SizeGridExplorer(_App):
    """Parameters, FLOPs per token and untrained loss of a grid of destination sizes; click a cell to pick it.

    Args:
        parent: the loaded parent.
        profile: its profile.
        eval_batches: held-out batches the untrained loss of every cell is measured on.
        studio: a :class:`SubcloneStudio` whose controls a selected cell is sent to.
        layers, hidden: the grid axes (default: :func:`~subclone_viz.sizing.default_grid_axes`).
        grid: a grid already computed (then ``layers``, ``hidden`` and ``eval_batches`` are not used).
    """

    def __init__(
        self,
        parent: "Parent",
        profile: Profile,
        eval_batches: Batches,
        studio: SubcloneStudio | None = None,
        layers: Sequence[int] | None = None,
        hidden: Sequence[int] | None = None,
        grid: SizeGrid | None = None,
    ):
        self.parent, self.profile, self.studio = parent, profile, studio
        self.grid = (
            grid if grid is not None else size_grid(parent, profile, layers, hidden, eval_batches, progress=False)
        )
        self.selected: tuple[int, int] | None = None
        widths = {
            "loss": FULL_WIDTH,
            "params": HALF_WIDTH,
            "flops_per_token": HALF_WIDTH,
            "latency": HALF_WIDTH,
            "memory": HALF_WIDTH,
        }
        self.figures = {
            quantity: _figure(plots.size_grid(self.grid, quantity), widths[quantity]) for quantity in QUANTITIES
        }
        for figure in self.figures.values():  # a selection only moves an outline: the heat maps keep their handlers
            for trace in figure.data:
                if isinstance(trace, go.Heatmap):
                    trace.on_click(self._clicked)
        self.cell_info = w.HTML(_message("Click a cell to choose that destination size."))
        self.widget = w.VBox(
            [
                _heading("How big a destination?"),
                _caption(
                    f"Every cell is a subclone ({html.escape(self.grid.depth)} depth, "
                    f"{html.escape(self.grid.width)} width, {html.escape(self.grid.scaling)} scaling) "
                    f"scored on {html.escape(self.grid.eval_source)} before any training. Click a cell of any map"
                    + (" to send it to the subclone studio" if studio is not None else "")
                    + "; the loss map outlines it."
                ),
                self.cell_info,
                self.figures["loss"],
                _row(self.figures["params"], self.figures["flops_per_token"]),
                _row(self.figures["latency"], self.figures["memory"]),
            ]
        )

    def _clicked(self, trace: Any, points: Any, state: Any) -> None:
        if points.xs and points.ys:
            self._guard(self.select, self.cell_info)(int(points.ys[0]), int(points.xs[0]))

    def select(self, i: int, j: int) -> DestinationSpec | None:
        """Choose cell (layers[i], hidden[j]): outline it and send it to the linked studio."""
        grid = self.grid
        rows, columns = grid.shape
        if not (0 <= i < rows and 0 <= j < columns):
            raise UserError(
                f"cell ({i}, {j}) is outside the grid: choose i in 0..{rows - 1} (blocks) and j in "
                f"0..{columns - 1} (widths)"
            )
        spec = grid.spec(i, j)
        reason = grid.reasons[i][j]
        if reason is not None:
            self.cell_info.value = _message(f"{spec.layers} blocks x {spec.hidden}: {reason}", error=True)
            return None
        self.selected = (i, j)
        # The outline goes on the loss map only: plotly's widget redraws a whole figure for any edit (see _refresh),
        # and outlining all five maps took most of a click's 340 ms in the browser. The text gives all five values.
        self.figures["loss"].layout.shapes = [plots.cell_outline(i, j)]
        loss = "" if math.isnan(grid.loss[i, j]) else f", held-out loss before training {grid.loss[i, j]:.3f}"
        self.cell_info.value = _message(
            f"{spec.layers} blocks x {spec.hidden} wide: {grid.params[i, j] / 1e6:.2f}M parameters, "
            f"{grid.flops_per_token[i, j] / 1e6:.3g} MFLOPs per token, {grid.latency[i, j] * 1e3:.3g} "
            + (f"± {spread * 1e3:.2g} " if (spread := grid.spread("latency")[i, j]) else "")
            + "ms per token "
            f"and {grid.memory[i, j] / 2**20:.0f} MiB measured on {html.escape(grid.device)}{loss}"
            + ("; sent to the subclone studio" if self.studio is not None else ""),
            css_class="size-grid-selection",
        )
        if self.studio is not None:
            self.studio.show_spec(spec, depth=grid.depth, width=grid.width, scaling=grid.scaling)
        return spec


# --------------------------------------------------------------------------------------------------------
# Calibration sensitivity


class StabilityExplorer(_App):
    """How much the calibration sample decides a destination's widths: what resamples of it keep.

    Moving a control re-plans every resample (cheap: no model runs); **Measure loss spread** also subclones
    and scores the destinations of a few resamples on ``eval_batches``. The destination keeps every parent
    block, so only the widths change.

    Args:
        parent: the loaded parent.
        profile: its profile, with per-shard sums (``sv.profile(..., shards=S)``).
        eval_batches: held-out batches for the loss spread (None: no loss button).
        resamples: resamples at first (editable).
        max_batches: held-out batches per scored destination.
    """

    def __init__(
        self,
        parent: "Parent",
        profile: Profile,
        eval_batches: Batches | None = None,
        resamples: int = 16,
        max_batches: int = 2,
    ):
        self.parent, self.profile, self.eval_batches, self.max_batches = parent, profile, eval_batches, max_batches
        self.stability: Stability | None = None
        self.error: str | None = None
        hidden = spec_choices(parent)["hidden"]
        self.hidden = _size_slider(hidden, default_destination(parent).hidden, "hidden d'", w.Layout(width="420px"))
        self.importance = w.Dropdown(
            options=available_estimators(profile), value=DEFAULT_ESTIMATOR, description="importance", style=_LABEL_STYLE
        )
        self.method = w.ToggleButtons(options=METHODS, value="bootstrap", style={"button_width": "90px"})
        self.resamples = w.IntSlider(
            value=resamples, min=2, max=64, description="resamples", continuous_update=False, style=_LABEL_STYLE
        )
        self.loss_resamples = w.BoundedIntText(
            value=3,
            min=1,
            max=16,
            description="destinations scored",
            style=_LABEL_STYLE,
            layout=w.Layout(width="200px"),
        )
        self.loss_button = w.Button(
            description="Measure loss spread",
            icon="balance-scale",
            disabled=eval_batches is None or parent.family.task == "encoder",
        )
        self.summary = w.HTML()
        self.figures: dict[str, go.FigureWidget] = {}
        for control in (self.hidden, self.importance, self.method, self.resamples):
            control.observe(self._guard(lambda change: self.measure(), self.summary, self._forget), names="value")
        self.loss_button.on_click(self._guard(lambda _: self.measure(with_losses=True), self.summary, self._forget))
        self.measure()
        widths = {"residual": FULL_WIDTH, "ffn": HALF_WIDTH, "heads": HALF_WIDTH}
        if self.stability is not None:  # else the profile cannot be resampled, and the message says why
            self.figures = {
                kind: _figure(plots.selection_stability(self.stability, kind), widths[kind])
                for kind in plots.STABILITY_KINDS
            }
        figures = list(self.figures.values())
        self.widget = w.VBox(
            [
                _heading("How much does the calibration sample decide?"),
                _caption(
                    "The profile keeps its sums in shards; each resample of the shards is a calibration sample "
                    "that could have been drawn instead. A channel, neuron or head kept by every resample is "
                    "the parent's choice; one kept by some is the calibration text's."
                ),
                w.HBox([self.hidden, self.importance]),
                w.HBox([self.method, self.resamples]),
                w.HBox([self.loss_resamples, self.loss_button]),
                self.summary,
                *([figures[0], _row(*figures[1:])] if figures else []),
            ]
        )

    def spec(self) -> DestinationSpec:
        return DestinationSpec(layers=self.parent.dims.layers, hidden=self.hidden.value)

    def _forget(self) -> None:
        self.stability, self.error = None, self.last_error

    def measure(self, with_losses: bool = False) -> Stability | None:
        """Resample and re-plan (and, ``with_losses``, score a few destinations); redraw."""
        try:
            self.stability = stability(
                self.parent,
                self.profile,
                self.spec(),
                importance=self.importance.value,
                resamples=self.resamples.value,
                method=self.method.value,
                heldout=self.eval_batches if with_losses else None,
                loss_resamples=min(self.loss_resamples.value, self.resamples.value) if with_losses else 0,
                max_batches=self.max_batches,
            )
        except ValueError as error:  # an old profile without shards, a single batch, a spec error
            self.stability, self.error = None, str(error)
            self.summary.value = _message(str(error), error=True)
            return None
        self.error = None
        summary = self.stability.summary()
        rows = [
            {
                "kept set": kind,
                "Jaccard with full sample": f"{summary['mean_jaccard_with_full'][kind]:.3f}",
                "Jaccard between resamples": f"{summary['mean_pairwise_jaccard'][kind]:.3f}",
            }
            for kind in plots.STABILITY_KINDS
        ]
        text = _table(rows, ["kept set", "Jaccard with full sample", "Jaccard between resamples"])
        if "loss" in summary:
            loss = summary["loss"]
            text += _message(
                f"held-out loss before training: {loss['mean']:.3f} ± {loss['std']:.3f} nats over "
                f"{len(loss['values'])} resamples (full sample: {loss['full']:.3f})"
            )
        self.summary.value = text
        for kind, figure in self.figures.items():
            _refresh(figure, plots.selection_stability(self.stability, kind))
        return self.stability


# --------------------------------------------------------------------------------------------------------
# Everything


class Explorer(_App):
    """Every explorer in one set of tabs, the size grid linked to the studio.

    Args:
        parent: the loaded parent.
        profile: its profile.
        batches: training batches.
        eval_batches: held-out batches (default ``batches``).
        ablation: the parent's block ablation, if computed.
        grid: a size grid, if computed; otherwise one is computed on ``grid_layers`` x ``grid_hidden``.
        save_dir, steps: as for :class:`SubcloneStudio`.
    """

    def __init__(
        self,
        parent: "Parent",
        profile: Profile,
        batches: Batches,
        eval_batches: Batches | None = None,
        ablation: BlockAblation | None = None,
        grid: SizeGrid | None = None,
        grid_layers: Sequence[int] | None = None,
        grid_hidden: Sequence[int] | None = None,
        save_dir: str | Path = DEFAULT_SAVE_DIR,
        steps: int = LESSON_STEPS,
    ):
        eval_batches = eval_batches if eval_batches is not None else batches
        # Parents without a tokenizer (images) trace the images of a held-out batch instead of typed text.
        batch = None if _has_tokenizer(parent) else next(iter(eval_batches))
        self.residual = ResidualExplorer(parent, profile, ablation, batch=batch)
        self.importance = ImportanceExplorer(profile)
        self.studio = SubcloneStudio(parent, profile, batches, eval_batches, save_dir=save_dir, steps=steps)
        self.sizes = SizeGridExplorer(
            parent, profile, eval_batches, studio=self.studio, layers=grid_layers, hidden=grid_hidden, grid=grid
        )
        self.stability = StabilityExplorer(parent, profile, eval_batches)
        if self.residual.depth is not None:
            self.studio.subclone_listeners.append(
                lambda result: self.residual.depth.show_destination(result.model, result.plan)
            )
        self.widget = w.Tab(
            children=[
                self.residual.widget,
                self.importance.widget,
                self.studio.widget,
                self.sizes.widget,
                self.stability.widget,
            ]
        )
        for index, title in enumerate(
            ("Residual property", "Neuron importance", "Subclone and train", "Sizes", "Calibration")
        ):
            self.widget.set_title(index, title)


# --------------------------------------------------------------------------------------------------------
# What a cut loses: predictions through depth, generations, per-token losses, layer similarity


class PredictionsThroughDepth(_App):
    """Pick a token: per residual layer, the parent's top-5 next tokens beside the current destination's.

    The lenses run once per text (one forward per model, plus a head per layer); picking a token only redraws.
    Blocks the plan removed read "skipped". Without a destination the parent's column stands alone;
    :meth:`show_destination` brings one in (the studio does after each Subclone).

    Args:
        parent: the parent (a text parent with a tokenizer, or an image classifier with ``batch``).
        text: the starting text; batch: for image parents, a batch whose images the picker offers.
    """

    def __init__(self, parent: "Parent", text: str = DEFAULT_TEXT, batch: dict[str, "torch.Tensor"] | None = None):
        self.parent, self.batch = parent, batch
        self.destination: "nn.Module | None" = None
        self.destination_plan: SubclonePlan | None = None
        self.lenses: dict[str, Any] = {}
        self.message = w.HTML()
        self.text = w.Text(
            value=text,
            description="text",
            continuous_update=False,
            layout=w.Layout(width=f"{FULL_WIDTH}px"),
            style=_LABEL_STYLE,
        )
        self.token = w.Dropdown(description="token", options=[], style=_LABEL_STYLE)
        self.table = w.HTML(layout=w.Layout(width=f"{FULL_WIDTH}px"))
        self.table.add_class("predictions-through-depth-table")  # for a page (or a browser benchmark) to find it
        self.loss_figure = _figure(go.Figure(), HALF_WIDTH)
        self._repicking = False
        self.text.observe(self._read, names="value")
        self.token.observe(self._draw, names="value")
        self.widget = w.VBox(
            [
                _heading("Predictions through depth", 4),
                _caption(
                    "The logit lens: each layer's hidden state read through the final norm and the head, as if the "
                    "later blocks were not there. The destination's layers sit beside the parent block they came "
                    "from."
                ),
                self.text if _has_tokenizer(parent) else w.HTML(),
                self.token,
                self.message,
                _row(self.table, self.loss_figure),
            ]
        )
        self.widget.add_class("predictions-through-depth")
        self._read()

    def _batch(self) -> dict[str, "torch.Tensor"]:
        if _has_tokenizer(self.parent):
            return dict(self.parent.tokenizer(self.text.value, return_tensors="pt"))
        if self.batch is None:
            raise ValueError("an image parent needs a batch of images to read (batch=...)")
        return self.batch

    def show_destination(self, model: "nn.Module | None", plan: SubclonePlan | None = None) -> None:
        """Compare against ``model`` (cut by ``plan``; None: the one it carries) from now on; None removes it."""
        self.destination, self.destination_plan = model, plan
        self._read()

    def _read(self, change: Any = None) -> None:
        try:
            if _has_tokenizer(self.parent) and not self.text.value.strip():
                raise ValueError("the text is empty: type something to read through depth")
            batch = self._batch()
            lenses = {"parent": logit_lens(self.parent, None, batch, name="parent")}
            if self.destination is not None:
                lenses["destination"] = logit_lens(
                    self.destination, None, batch, plan=self.destination_plan, name="destination"
                )
        except (ValueError, TypeError) as error:
            self.message.value = _message(str(error), error=True)
            return
        self.message.value = ""
        self.lenses = lenses
        first = lenses["parent"]
        if first.tokens is not None:
            options = [(f"{i}: {token!r}", i) for i, token in enumerate(first.tokens[0])]
        else:
            options = [(f"image {i}", i) for i in range(first.targets.shape[0])]
        self._repicking = True
        try:
            self.token.options = options
            self.token.value = options[-1][1] if first.tokens is not None else 0
        finally:
            self._repicking = False
        _refresh(self.loss_figure, plots.lens_loss(lenses))
        self._draw()

    def _draw(self, change: Any = None) -> None:
        if self._repicking or not self.lenses or self.token.value is None:
            return
        parent, destination = self.lenses["parent"], self.lenses.get("destination")
        image = parent.tokens is None
        sequence, position = (self.token.value, 0) if image else (0, self.token.value)
        self.table.value = plots.predictions_through_depth_html(parent, destination, sequence, position)


class CompareOutputs(_App):
    """The generations of several models for one prompt, streamed as they are produced, and a held-out text
    coloured by each model's per-token loss against the parent's.

    Args:
        parent: the parent (its tokenizer serves models that came without one).
        models: a callable returning the models to compare, by name, at the time of each click (the studio's
            subclone and trained initializations change as it runs); the parent is always first.
        heldout: a held-out batch for the per-token losses.
        prompt: the starting prompt; max_new_tokens: the starting length.
    """

    def __init__(
        self,
        parent: "Parent",
        models: "Any",
        heldout: dict[str, "torch.Tensor"] | None = None,
        prompt: str = "The most important thing about",
        max_new_tokens: int = 24,
    ):
        self.parent, self.models, self.heldout = parent, models, heldout
        self.generations: Any = None  # the last Generations
        self.losses: Any = None  # the last TokenLosses
        self.thread: threading.Thread | None = None
        self.prompt = w.Textarea(
            value=prompt, description="prompt", style=_LABEL_STYLE, layout=w.Layout(width="60%", height="4em")
        )
        self.max_new_tokens = w.BoundedIntText(
            value=max_new_tokens,
            min=1,
            max=4096,
            description="new tokens",
            style=_LABEL_STYLE,
            layout=w.Layout(width="180px"),
        )
        self.sample = w.Checkbox(value=False, description="sample (seeded)", indent=False)
        self.seed = w.IntText(value=0, description="seed", style=_LABEL_STYLE, layout=w.Layout(width="140px"))
        self.button = w.Button(description="Generate", button_style="primary", icon="play")
        self.message = w.HTML()
        self.outputs = w.VBox()
        self.loss_model = w.Dropdown(description="colour by", options=[], style=_LABEL_STYLE)
        self.loss_text = w.HTML()
        self.button.on_click(lambda _: self.start())
        self.loss_model.observe(self._draw_losses, names="value")
        self.widget = w.VBox(
            [
                _heading("Compare outputs", 4),
                w.HBox([self.prompt, w.VBox([self.max_new_tokens, self.sample, self.seed, self.button])]),
                self.message,
                self.outputs,
                _heading("Where each model is worse than the parent", 4),
                _caption(
                    "Held-out text, each token coloured by the model's loss minus the parent's (red: worse, blue: "
                    "better); hover for the values."
                ),
                self.loss_model,
                self.loss_text,
            ]
        )

    def _current(self) -> dict[str, Any]:
        return {"parent": self.parent, **dict(self.models())}

    def generate(self) -> Any:
        """Generate with every model now, streaming into the view; returns the Generations (or None on an error)."""
        models = self._current()
        boxes = {name: w.HTML(layout=w.Layout(width="95%")) for name in models}
        texts = {name: "" for name in models}
        self.outputs.children = list(boxes.values())

        def show(name: str, piece: str) -> None:
            texts[name] += piece
            shown = f"<b>{html.escape(name)}</b>: <span style='white-space:pre-wrap'>{html.escape(texts[name])}</span>"
            boxes[name].value = shown

        for name in models:
            show(name, "")
        try:
            self.generations = generate(
                models,
                self.prompt.value,
                self.max_new_tokens.value,
                do_sample=self.sample.value,
                seed=self.seed.value,
                on_token=show,
                tokenizer=self.parent.tokenizer,
            )
        except (ValueError, TypeError) as error:
            self.message.value = _message(str(error), error=True)
            return None
        self.message.value = ""
        self.score()
        return self.generations

    def start(self) -> threading.Thread:
        """Generate in a background thread (the button), so tokens show as they come."""
        if self.thread is not None and self.thread.is_alive():
            return self.thread
        self.thread = threading.Thread(target=self._run, daemon=True, name="subclone-viz-generate")
        self.thread.start()
        return self.thread

    def _run(self) -> None:
        self.button.disabled = True
        try:
            self.generate()
        except Exception as error:  # noqa: BLE001 - a worker thread has no caller to raise to: show it
            log.exception("generation failed")
            self.message.value = _message(f"generation failed: {type(error).__name__}: {error}", error=True)
        finally:
            self.button.disabled = False

    def score(self) -> Any:
        """Per-token losses of every model on the held-out batch's first sequence."""
        if self.heldout is None:
            return None
        batch = {k: v[:1] for k, v in self.heldout.items()}
        self.losses = token_losses(self._current(), batch)
        others = [name for name in self.losses.names if name != "parent"]
        self.loss_model.options = others
        if others and self.loss_model.value not in others:
            self.loss_model.value = others[0]
        self._draw_losses()
        return self.losses

    def _draw_losses(self, change: Any = None) -> None:
        if self.losses is None or not self.loss_model.value:
            self.loss_text.value = ""
            return
        self.loss_text.value = plots.token_loss_html(self.losses, self.loss_model.value, "parent")


class SimilarityView(_App):
    """Where the studio's destination parts from the parent: cosine of every parent layer against every
    destination layer, before training (the Subclone button's model) and after (the trained ``subclone``
    initialization), and CKA per layer for both.

    Args:
        studio: the studio whose subclone and trained models it measures.
        max_batches: held-out batches to stream through parent and destinations.
    """

    def __init__(self, studio: "SubcloneStudio", max_batches: int = 2):
        self.studio, self.max_batches = studio, max_batches
        self.similarities: dict[str, Any] = {}
        self.button = w.Button(description="Measure similarity", icon="th")
        self.message = w.HTML()
        self.figures = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.button.on_click(lambda _: self.measure())
        self.widget = w.VBox(
            [
                _caption(
                    "Linear CKA and cosine on the kept channels, against the parent block each destination layer "
                    "came from; Subclone first, and train the <code>subclone</code> initialization for the "
                    "after-training view."
                ),
                self.button,
                self.message,
                self.figures,
            ]
        )

    def measure(self) -> dict[str, Any]:
        """Measure every model there is (before and after training); returns the LayerSimilarity records."""
        models = {}
        if self.studio.last_result is not None:
            models["before training"] = self.studio.last_result.model
        if "subclone" in self.studio.trained_models:
            models["after training"] = self.studio.trained_models["subclone"]
        if not models:
            self.message.value = _message("nothing to measure yet: press Subclone (and Train) first", error=True)
            return {}
        try:
            self.similarities = {
                name: layer_similarity(
                    self.studio.parent, model, None, self.studio.eval_batches, max_batches=self.max_batches
                )
                for name, model in models.items()
            }
        except ValueError as error:
            self.message.value = _message(str(error), error=True)
            return {}
        self.message.value = ""
        heat = [
            _figure(plots.similarity_heatmap(s, title=f"{name}: cosine, kept channels"), HALF_WIDTH)
            for name, s in self.similarities.items()
        ]
        self.figures.children = [*heat, _figure(plots.similarity_by_layer(self.similarities), HALF_WIDTH)]
        return self.similarities


class CutViews(_App):
    """The studio's tabs on what its cut loses: compare outputs (text parents that generate) and similarity."""

    def __init__(self, studio: "SubcloneStudio"):
        parent = studio.parent
        children, titles = [], []
        self.outputs: CompareOutputs | None = None
        if parent.family.task == "causal-lm" and _has_tokenizer(parent):
            heldout = next(iter(studio.eval_batches), None)
            self.outputs = CompareOutputs(parent, lambda: self._models(studio), heldout=heldout)
            children.append(self.outputs.widget)
            titles.append("Compare outputs")
        self.images: ImagePredictions | None = None
        if parent.family.task == "image-classification":
            self.images = ImagePredictions(parent, lambda: self._models(studio), next(iter(studio.eval_batches)))
            children.append(self.images.widget)
            titles.append("Predictions")
        self.similarity = SimilarityView(studio)
        children.append(self.similarity.widget)
        titles.append("Similarity to the parent")
        self.widget = w.Tab(children=children)
        for index, title in enumerate(titles):
            self.widget.set_title(index, title)

    @staticmethod
    def _models(studio: "SubcloneStudio") -> dict[str, Any]:
        models = {}
        if studio.last_result is not None:
            models["subclone (untrained)"] = studio.last_result.model
        models.update({f"{init} (trained)": model for init, model in studio.trained_models.items()})
        return models


class ImagePredictions(_App):
    """Each model's predicted class and confidence on a few held-out images (image classifiers).

    Args:
        parent: the parent; models: a callable returning the other models by name; batch: held-out images.
        count: how many images.
    """

    def __init__(self, parent: "Parent", models: Any, batch: dict[str, "torch.Tensor"], count: int = 6):
        self.parent, self.models, self.batch, self.count = parent, models, batch, count
        self.button = w.Button(description="Predict", icon="eye")
        self.message = w.HTML()
        self.figure = _figure(go.Figure(), FULL_WIDTH)
        self.button.on_click(lambda _: self.predict())
        self.widget = w.VBox([self.button, self.message, self.figure])

    def predict(self) -> dict[str, Any]:
        batch = {k: v[: self.count] for k, v in self.batch.items()}
        try:
            lenses = {
                name: logit_lens(model, None, batch, layers=[-1], name=name)
                for name, model in {"parent": self.parent, **dict(self.models())}.items()
            }
        except ValueError as error:
            self.message.value = _message(str(error), error=True)
            return {}
        self.message.value = ""
        _refresh(self.figure, plots.image_predictions(lenses, batch["pixel_values"].float().cpu().numpy(), self.count))
        return lenses


# The budget chooser


class BudgetExplorer(_App):
    """Forecast loss at a training budget against an inference cost, from a :func:`~subclone_viz.budget_grid`'s
    cached pilots: the budget slider and the cost menu only re-forecast (no training).

    Args:
        grid: a :class:`~subclone_viz.budget.BudgetGrid`.
        cost: the first cost shown ("params", "flops_per_token", "latency", "memory").
    """

    def __init__(self, grid: Any, cost: str = "params"):
        self.base = self.grid = grid
        unit = "tokens" if grid.tokens is not None else "flops"
        budget = grid.tokens if grid.tokens is not None else grid.flops
        # The smallest budget every pilot still fits in, as a multiple of the grid's own.
        smallest = max(c["pilot"]["steps"][-1] / c["steps"] for c in grid.cells)
        self.budget = w.FloatLogSlider(
            value=budget,
            base=10,
            min=math.log10(budget * smallest),
            max=math.log10(budget * 16),
            step=0.05,
            description=f"budget ({unit})",
            readout_format=".3g",
            continuous_update=False,
            style=_LABEL_STYLE,
            layout=w.Layout(width="520px"),
        )
        self.cost = w.Dropdown(options=list(COSTS), value=cost, description="cost", style=_LABEL_STYLE)
        self.info = w.HTML()
        self.figure = _figure(plots.budget_pareto(grid, cost), FULL_WIDTH)
        self.budget.observe(self._changed, names="value")
        self.cost.observe(self._changed, names="value")
        self._describe()
        self.widget = w.VBox(
            [
                _heading("Which size for my budget?"),
                _caption(
                    "Each point is a size forecast at the budget from its pilot, with an 80% "
                    "interval; the red line joins the sizes no other beats on both cost and "
                    "forecast loss."
                ),
                _row(self.budget, self.cost),
                self.info,
                self.figure,
            ]
        )

    def _changed(self, change: Any) -> None:
        self.show(self.budget.value, self.cost.value)

    def show(self, budget: float, cost: str) -> None:
        """Re-forecast at ``budget`` (the grid's unit) and redraw against ``cost``."""
        try:
            unit = "tokens" if self.base.tokens is not None else "flops"
            self.grid = self.base.at(**{unit: budget})
        except UserError as error:  # a budget below a pilot's length: said in the view
            self.info.value = _message(str(error), error=True)
            return
        _refresh(self.figure, plots.budget_pareto(self.grid, cost))
        self._describe()

    def _describe(self) -> None:
        best = self.grid.best()
        self.info.value = _message(
            f"forecast best: {best['layers']} x {best['hidden']} ({best['init']}), {best['forecast']['loss']:.3f} "
            f"nats [{best['forecast']['low']:.3f}, {best['forecast']['high']:.3f}] after {best['steps']:,} steps; "
            f"the pilots cost {self.grid.pilot_cost:.0%} of training it",
            css_class="budget-best",
        )
