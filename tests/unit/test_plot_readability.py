"""Figures a reader can read: checked on the figure objects, the way a screen would show them.

Log axes label only 1-2-5 (or whole decades), never plotly's crowded minor digits; block axes span exactly the
blocks with upright labels; the token trace's legend wraps under it; loss plots before training say so instead
of drawing empty axes; a speedup that never reached its target reads as a bound per step and per second alike.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from subclone_viz import plots
from subclone_viz.compare import speedup_text
from subclone_viz.evaluate import BlockAblation
from subclone_viz.profile import Profile
from subclone_viz.trace import TokenTrace
from subclone_viz.train import History

BLOCKS = 30  # SmolLM2's depth: the case that crowded


def profile_of(blocks: int, spread: float) -> Profile:
    """A made-up profile of ``blocks`` blocks; ``spread``: how many times the first block's ||f||/||x|| is the rest's."""
    rng = np.random.default_rng(0)
    sums = rng.uniform(1, 2, (blocks, 3))
    sums[0, 1] *= spread
    return Profile(
        parent={
            "name": "made-up",
            "family": "llama",
            "description": "made up",
            "dims": {"layers": blocks, "hidden": 8, "ffn": 12, "heads": 2, "kv_heads": 1, "head_dim": 4},
            "checksum": [0.0],
        },
        source="made up",
        tokens=10,
        block_sums=sums,
        residual_abs_sums=rng.uniform(1, 2, (blocks + 1, 8)) * np.logspace(0, 2.5, 8),
        ffn_abs_sums=rng.uniform(0.5, 5, (blocks, 12)) * np.logspace(0, 1.5, 12),
        attn_abs_sums=rng.uniform(0.5, 5, (blocks, 8)),
    )


def tick_labels_fit(axis, values) -> None:
    """An axis labelled at explicit ticks, each a 1, 2 or 5 (or 1 to 9 within one decade), at most ~12."""
    assert axis.type == "log" and axis.tickvals is not None
    assert len(axis.tickvals) <= 12
    assert [float(t) for t in axis.ticktext] == pytest.approx(list(axis.tickvals))
    low, high = np.nanmin(values), np.nanmax(values)
    assert min(axis.tickvals) <= low * 1.0001 and max(axis.tickvals) >= high / 10  # the data's range is labelled


def test_log_ticks_are_few_and_round() -> None:
    assert plots.log_ticks([0.22, 0.35]) == [0.2, 0.3, 0.4]
    assert plots.log_ticks([0.05, 2.0]) == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    many = plots.log_ticks([1e-6, 1e6])
    assert len(many) <= 8 and all(math.log10(t) == round(math.log10(t)) for t in many)
    assert plots.log_ticks([0.0, -1.0, float("nan")]) == []


def test_every_plotly_log_axis_labels_only_round_values() -> None:
    prof = profile_of(BLOCKS, spread=200.0)
    ratio = plots.residual_ratio(prof, "f_over_x")
    tick_labels_fit(ratio.layout.yaxis, prof.block_metrics["f_over_x"])
    massive = plots.massive_activations(prof, 3)
    tick_labels_fit(massive.layout.yaxis, np.concatenate([np.asarray(t.y, float) for t in massive.data]))
    ffn = plots.ffn_importance(prof, 2)
    tick_labels_fit(ffn.layout.yaxis, ffn.data[0].y)


@pytest.mark.parametrize("blocks", [4, 18, BLOCKS])
def test_block_axes_span_the_blocks_with_upright_labels(blocks: int) -> None:
    prof = profile_of(blocks, spread=2.0)
    ablation = BlockAblation(
        baseline=3.0, removed=list(np.linspace(3, 9, blocks)), duplicated=list(np.linspace(3, 4, blocks))
    )
    for fig in (plots.residual_ratio(prof), plots.block_ablation(ablation)):
        axis = fig.layout.xaxis
        assert tuple(axis.range) == (-0.5, blocks - 0.5)
        assert axis.tickangle == 0
        assert math.ceil(blocks / axis.dtick) <= 15, "at most 15 labels: they fit a half-width figure upright"


def test_token_trace_legend_wraps_below_the_plot() -> None:
    trace = TokenTrace(
        parent="made-up",
        sequence_index=0,
        token_index=2,
        tokens=["a", "b", "c"],
        norms=np.arange(1.0, BLOCKS + 2),
        cos_to_previous=np.full(BLOCKS, 0.9),
        cos_to_final=np.full(BLOCKS + 1, 0.8),
        f_over_sum=np.full(BLOCKS, 0.2),
    )
    fig = plots.token_trace(trace)
    assert fig.layout.legend.y < 0 and fig.layout.legend.xanchor == "left"
    assert tuple(fig.layout.xaxis2.range) == (-0.5, BLOCKS + 0.5)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_loss_plots_before_training_say_so(backend: str) -> None:
    fig = plots.loss_curves({}, metric="eval_loss", backend=backend)
    if backend == "plotly":
        assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
        assert "no training yet" in fig.layout.annotations[0].text
    else:
        assert "no training yet" in fig.axes[0].texts[0].get_text() and not fig.axes[0].axison
    started = plots.loss_curves({"random": History(label="random")}, backend="plotly")
    assert "waiting for the first point" in started.layout.annotations[0].text


def test_loss_plots_with_points_show_their_axes() -> None:
    history = {"label": "random", "records": [{"step": 0, "eval_loss": 10.8}, {"step": 5, "eval_loss": 9.9}]}
    fig = plots.loss_curves({"random": history})
    assert fig.layout.xaxis.visible is True and not fig.layout.annotations


def test_placeholder_has_a_title_and_no_axes() -> None:
    fig = plots.placeholder("Training loss", "press Train")
    assert fig.layout.title.text == "Training loss" and fig.layout.xaxis.visible is False and not fig.data


def test_a_target_never_reached_is_a_bound_per_step_and_per_second() -> None:
    row = {"speedup": 1.0, "speedup_per_second": 1.2, "reached": False, "speedup_lower_bound": False}
    per_step, per_second = speedup_text(row), speedup_text(row, "speedup_per_second")
    assert per_step == "less than 1x (never reached random's final loss)"
    assert per_second == "less than 1.2x (never reached random's final loss)"
    assert speedup_text({"speedup": 3.04, "reached": True}) == "3x"
