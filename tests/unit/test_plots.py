"""Every figure in both backends, checked against the records it draws; and the token trace it draws from.

Most figures are fed a synthetic profile whose numbers are known (a massive channel, a known ranking), so
each test can say exactly what the figure must contain. The token trace is checked against a profile of a
single token, which measures the same per-block quantities by a different route.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from matplotlib.figure import Figure as MatplotlibFigure

import subclone_viz as sv
from subclone_viz import plots
from subclone_viz.evaluate import BlockAblation
from subclone_viz.profile import BLOCK_METRICS, Profile
from subclone_viz.sizing import SizeGrid
from subclone_viz.trace import TokenTrace
from tiny import tiny_batches, tiny_model

BACKENDS = ("plotly", "matplotlib")
FIGURE_TYPES = {"plotly": go.Figure, "matplotlib": MatplotlibFigure}
LAYERS, WIDTH, FFN, HEADS, HEAD_DIM = 4, 16, 12, 2, 4
MASSIVE = 5  # the synthetic profile's massive channel


def synthetic_profile() -> Profile:
    rng = np.random.default_rng(0)
    residual = rng.uniform(1, 2, (LAYERS + 1, WIDTH))
    residual[1:, MASSIVE] = 300.0  # a massive activation from the first block on
    return Profile(
        parent={
            "name": "synthetic",
            "family": "llama",
            "description": "a made-up parent",
            "dims": {
                "layers": LAYERS,
                "hidden": WIDTH,
                "ffn": FFN,
                "heads": HEADS,
                "kv_heads": 1,
                "head_dim": HEAD_DIM,
            },
            "checksum": [0.0],
        },
        source="synthetic",
        tokens=10,
        block_sums=rng.uniform(0, 10, (LAYERS, 3)),
        residual_abs_sums=residual * 10,
        ffn_abs_sums=rng.uniform(0.5, 5, (LAYERS, FFN)),
        attn_abs_sums=rng.uniform(0.5, 5, (LAYERS, HEADS * HEAD_DIM)),
    )


@pytest.fixture(scope="module")
def prof() -> Profile:
    return synthetic_profile()


def synthetic_grid() -> SizeGrid:
    loss = np.array([[5.0, 4.0], [4.5, np.nan]])
    return SizeGrid(
        parent="synthetic",
        layers=[2, 4],
        hidden=[8, 16],
        params=np.array([[100.0, 200.0], [150.0, np.nan]]),
        flops_per_token=np.array([[1e3, 2e3], [1.5e3, np.nan]]),
        loss=loss,
        reasons=[[None, None], [None, "hidden=16 is not valid: a made-up reason"]],
        dims=[[None, None], [None, None]],
        depth="middle",
        width="importance",
        scaling="sqrt",
        seq_len=8,
        eval_source="2 held-out batches",
        latency=np.array([[1e-3, 2e-3], [3e-3, np.nan]]),
        memory=np.array([[2**20, 3 * 2**20], [2 * 2**20, np.nan]]),
        device="a test CPU",
    )


def check_type(fig, backend):
    assert isinstance(fig, FIGURE_TYPES[backend])


# ------------------------------------------------------------------------------------------ blocks


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_ratio_draws_each_metric_and_greys_out_removed_blocks(prof, backend):
    fig = plots.residual_ratio(prof, "all", kept_layers=[0, 3, 3], backend=backend)
    check_type(fig, backend)
    metrics = prof.block_metrics
    if backend == "plotly":
        assert [t.name for t in fig.data] == [plots.BLOCK_METRIC_LABELS[m] for m in BLOCK_METRICS]
        for trace, name in zip(fig.data, BLOCK_METRICS):
            np.testing.assert_allclose(trace.y, metrics[name])
            colors = list(trace.marker.color)
            assert [c == plots.REMOVED_COLOR for c in colors] == [False, True, True, False]
            assert list(trace.marker.symbol) == ["circle", "x", "x", "circle"]
            assert list(trace.customdata) == ["kept", "removed", "removed", "kept x2"]
        bands = [s for s in fig.layout.shapes if s.type == "rect"]
        assert [(b.x0, b.x1) for b in bands] == [(0.5, 2.5)]  # one band over the removed run 1..2
    else:
        ax = fig.axes[0]
        removed = [c for c in ax.collections if c.get_gid() == "removed"]
        assert len(removed) == 3  # one per metric
        for collection, name in zip(removed, BLOCK_METRICS):
            np.testing.assert_allclose(collection.get_offsets()[:, 0], [1, 2])
            np.testing.assert_allclose(collection.get_offsets()[:, 1], metrics[name][[1, 2]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_ratio_without_a_plan_marks_nothing_removed(prof, backend):
    fig = plots.residual_ratio(prof, backend=backend)
    if backend == "plotly":
        assert len(fig.data) == 1 and plots.REMOVED_COLOR not in list(fig.data[0].marker.color)
        assert not fig.layout.shapes
    else:
        assert not [c for c in fig.axes[0].collections if c.get_gid() == "removed"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_ratio_switches_to_a_log_axis_when_one_block_dwarfs_the_rest(backend):
    spread = synthetic_profile()
    spread.block_sums[0, 1] = 1000.0 * spread.tokens  # ||f(x)|| / ||x|| = 1000 in block 0
    wide, narrow = (plots.residual_ratio(spread, metric, backend=backend) for metric in ("all", "f_over_sum"))
    if backend == "plotly":
        assert (wide.layout.yaxis.type, narrow.layout.yaxis.type) == ("log", None)
    else:
        assert (wide.axes[0].get_yscale(), narrow.axes[0].get_yscale()) == ("log", "linear")


def test_residual_ratio_rejects_bad_metric_blocks_and_backend(prof):
    with pytest.raises(ValueError, match="f_over_sum"):
        plots.residual_ratio(prof, "ratio")
    with pytest.raises(ValueError, match="0 to 3"):
        plots.residual_ratio(prof, kept_layers=[0, 7])
    with pytest.raises(ValueError, match="plotly, matplotlib"):
        plots.residual_ratio(prof, backend="bokeh")


@pytest.mark.parametrize("backend", BACKENDS)
def test_block_ablation_draws_removed_duplicated_and_the_baseline(backend):
    ablation = BlockAblation(baseline=3.0, removed=[9.0, 3.1, 3.2], duplicated=[4.0, 3.05, 3.3])
    fig = plots.block_ablation(ablation, backend=backend)
    check_type(fig, backend)
    if backend == "plotly":
        removed, duplicated, baseline = fig.data
        np.testing.assert_allclose(removed.y, ablation.removed)
        np.testing.assert_allclose(duplicated.y, ablation.duplicated)
        np.testing.assert_allclose(baseline.y, [3.0, 3.0])
        assert "3.000" in baseline.name
    else:
        lines = fig.axes[0].get_lines()
        np.testing.assert_allclose(lines[0].get_ydata(), ablation.removed)
        np.testing.assert_allclose(lines[1].get_ydata(), ablation.duplicated)
        np.testing.assert_allclose(lines[2].get_ydata(), [3.0, 3.0])  # axhline
    assert isinstance(plots.block_ablation(ablation.to_dict(), backend=backend), FIGURE_TYPES[backend])


# ------------------------------------------------------------------------------------------ channels


@pytest.mark.parametrize("backend", BACKENDS)
def test_channel_heatmap_is_log10_importance_in_shared_ranking_order(prof, backend):
    fig = plots.channel_heatmap(prof, backend=backend)
    check_type(fig, backend)
    expected = np.log10(prof.residual_importance[:, prof.shared_ranking()])
    if backend == "plotly":
        heatmap = fig.data[0]
        np.testing.assert_allclose(np.asarray(heatmap.z), expected)
        assert heatmap.customdata[0][0] == MASSIVE  # the massive channel ranks first
    else:
        np.testing.assert_allclose(fig.axes[0].images[0].get_array(), expected)


def test_channel_heatmap_top_and_unsorted_and_linear(prof):
    ranking = prof.shared_ranking()
    top = plots.channel_heatmap(prof, top=4, sort=False, log=False)
    channels = np.sort(ranking[:4])
    np.testing.assert_allclose(np.asarray(top.data[0].z), prof.residual_importance[:, channels])
    assert list(top.data[0].customdata[0]) == list(channels)
    with pytest.raises(ValueError, match="1 <= top <= 16"):
        plots.channel_heatmap(prof, top=17)


def test_log_scale_floors_zero_importance_instead_of_minus_infinity(prof):
    zeroed = synthetic_profile()
    zeroed.residual_abs_sums[:, 3] = 0.0
    z = np.asarray(plots.channel_heatmap(zeroed, sort=False).data[0].z)
    assert np.isfinite(z).all()
    assert z[:, 3].max() <= z.min() + 1e-12


def test_massive_channels_finds_the_planted_channel_and_its_ratio(prof):
    massive = plots.massive_channels(prof, n=3)
    assert massive.channels[0] == MASSIVE
    assert massive.magnitude.shape == (LAYERS + 1, 3)
    np.testing.assert_allclose(massive.magnitude[:, 0], prof.residual_importance[:, MASSIVE])
    np.testing.assert_allclose(massive.median, np.median(prof.residual_importance, axis=1))
    assert massive.ratio[1:, 0].min() > 100
    with pytest.raises(ValueError, match="n=0"):
        plots.massive_channels(prof, n=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_massive_activations_plots_the_top_channels_and_the_median(prof, backend):
    fig = plots.massive_activations(prof, n=3, backend=backend)
    check_type(fig, backend)
    if backend == "plotly":
        assert len(fig.data) == 4 and fig.data[-1].name == "median channel"
        assert fig.data[0].name.startswith(f"channel {MASSIVE} ")
        assert fig.layout.yaxis.type == "log"
    else:
        assert len(fig.axes[0].get_lines()) == 4 and fig.axes[0].get_yscale() == "log"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["spearman", "topk"])
def test_rank_consistency_heatmap_is_the_profile_matrix(prof, backend, kind):
    fig = plots.rank_consistency(prof, k=4, kind=kind, backend=backend)
    check_type(fig, backend)
    consistency = prof.rank_consistency(4)
    expected = consistency.spearman if kind == "spearman" else consistency.topk_overlap
    z = np.asarray(fig.data[0].z) if backend == "plotly" else fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(z, expected)
    with pytest.raises(ValueError, match="'spearman' or 'topk'"):
        plots.rank_consistency(prof, kind="pearson", backend=backend)


# ------------------------------------------------------------------------------------------ FFN and heads


@pytest.mark.parametrize("backend", BACKENDS)
def test_ffn_importance_curve_is_sorted_and_marks_the_kept_width(prof, backend):
    fig = plots.ffn_importance(prof, layer=2, keep=5, backend=backend)
    check_type(fig, backend)
    expected = np.sort(prof.ffn_importance[2])[::-1]
    if backend == "plotly":
        np.testing.assert_allclose(fig.data[0].y, expected)
        assert [s.x0 for s in fig.layout.shapes] == [4.5]
    else:
        line, cut = fig.axes[0].get_lines()
        np.testing.assert_allclose(line.get_ydata(), expected)
        assert cut.get_xdata()[0] == 4.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_ffn_importance_of_every_block_is_a_sorted_log_heatmap(prof, backend):
    fig = plots.ffn_importance(prof, backend=backend)
    expected = np.log10(-np.sort(-prof.ffn_importance, axis=1))
    z = np.asarray(fig.data[0].z) if backend == "plotly" else fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(z, expected)


def test_ffn_importance_rejects_bad_layer_and_keep(prof):
    with pytest.raises(ValueError, match="blocks 0 to 3"):
        plots.ffn_importance(prof, layer=4)
    with pytest.raises(ValueError, match="1 <= keep <= 12"):
        plots.ffn_importance(prof, keep=13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_head_importance_is_the_layers_by_heads_matrix(prof, backend):
    fig = plots.head_importance(prof, backend=backend)
    check_type(fig, backend)
    z = np.asarray(fig.data[0].z) if backend == "plotly" else fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(z, prof.head_importance)
    assert z.shape == (LAYERS, HEADS)


# ------------------------------------------------------------------------------------------ token trace


def made_up_trace() -> TokenTrace:
    return TokenTrace(
        parent="synthetic",
        sequence_index=0,
        token_index=1,
        tokens=["a", "b", "c"],
        norms=np.array([1.0, 2.0, 3.0]),
        cos_to_previous=np.array([0.9, 0.95]),
        cos_to_final=np.array([0.5, 0.8, 1.0]),
        f_over_sum=np.array([0.3, 0.2]),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_trace_figure_draws_norms_and_cosines_at_their_layers(backend):
    trace = made_up_trace()
    fig = plots.token_trace(trace, backend=backend)
    check_type(fig, backend)
    if backend == "plotly":
        norms, previous, final, ratio = fig.data
        np.testing.assert_allclose(norms.y, trace.norms)
        np.testing.assert_allclose(previous.x, [1, 2])  # block i sits between layers i and i+1
        np.testing.assert_allclose(previous.y, trace.cos_to_previous)
        np.testing.assert_allclose(final.y, trace.cos_to_final)
        np.testing.assert_allclose(ratio.y, trace.f_over_sum)
        assert "'b'" in fig.layout.title.text
    else:
        top, bottom = fig.axes
        np.testing.assert_allclose(top.get_lines()[0].get_ydata(), trace.norms)
        np.testing.assert_allclose(bottom.get_lines()[0].get_xdata(), [1, 2])


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert"])
def test_token_trace_matches_a_profile_of_that_single_token(name):
    """With every other position masked, a profile measures exactly the traced token's block metrics."""
    parent = sv.load_parent(tiny_model(name), device="cpu")
    batch = tiny_batches(name, count=1, batch_size=1, pad=False)[0]
    alone = {"input_ids": batch["input_ids"][:, :1], "attention_mask": batch["attention_mask"][:, :1]}
    trace = sv.token_trace(parent, alone, token_index=0)
    prof = sv.profile(parent, [alone], progress=False)
    np.testing.assert_allclose(trace.f_over_sum, prof.block_metrics["f_over_sum"], rtol=1e-5)
    # For one token the profile's per-channel mean |h| is |h| itself, so its norm is the token's norm.
    np.testing.assert_allclose(trace.norms, np.linalg.norm(prof.residual_importance, axis=1), rtol=1e-5)
    if name != "bert":  # pre-norm: the block output is x + f(x) itself
        np.testing.assert_allclose(1 - trace.cos_to_previous, prof.block_metrics["one_minus_cos"], atol=1e-6)
    assert trace.cos_to_final[-1] == pytest.approx(1.0)
    assert trace.tokens is None  # a model object without a tokenizer


def test_token_trace_norms_are_the_hidden_states_norms():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batch = tiny_batches("llama", count=1)[0]
    trace = sv.token_trace(parent, batch, token_index=-1, sequence_index=1)
    with torch.no_grad():
        hidden = parent.model(**batch, output_hidden_states=True).hidden_states  # L+1 of (B, T, d)
    expected = [float(h[1, -1].double().norm()) for h in hidden[:-1]]  # the last one is after the final norm
    np.testing.assert_allclose(trace.norms[:-1], expected, rtol=1e-5)
    assert trace.token_index == batch["input_ids"].shape[1] - 1 and trace.sequence_index == 1
    assert trace.num_layers == 4 and len(trace.cos_to_previous) == 4 and len(trace.norms) == 5


def test_token_trace_rejects_padding_and_out_of_range_positions():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batch = tiny_batches("llama", count=1)[0]  # sequence 0 ends in 4 padding positions
    with pytest.raises(ValueError, match="padding"):
        sv.token_trace(parent, batch, token_index=-1, sequence_index=0)
    with pytest.raises(ValueError, match="choose 0 to 11"):
        sv.token_trace(parent, batch, token_index=12)
    with pytest.raises(ValueError, match="2 sequences"):
        sv.token_trace(parent, batch, token_index=0, sequence_index=2)
    with pytest.raises(ValueError, match="no tokenizer"):
        sv.token_trace(parent, "some text", token_index=0)


def test_token_trace_of_an_image_follows_a_patch_token():
    parent = sv.load_parent(tiny_model("vit"), device="cpu")
    trace = sv.token_trace(parent, tiny_batches("vit", count=1)[0], token_index=0)
    assert trace.tokens is None and len(trace.norms) == 5 and np.isfinite(trace.norms).all()
    assert trace.to_dict()["norms"] == trace.norms.tolist()


# ------------------------------------------------------------------------------------------ training


RECORDS_HISTORY = {
    "label": "random",
    "records": [
        {"step": 0, "tokens": 0, "eval_loss": 10.0},
        {"step": 1, "tokens": 100, "train_loss": 9.5, "lr": 1e-4, "wall_time": 1.0},
        {"step": 2, "tokens": 200, "train_loss": 9.0, "lr": 1e-4, "wall_time": 2.0, "eval_loss": 8.8},
    ],
}
TRAIN_LAYOUT_HISTORY = {  # the layout of subclone_viz.train.History.to_dict()
    "label": "subclone",
    "unit": "tokens",
    "steps": [
        {"step": 1, "seen": 100, "loss": 4.0, "lr": 1e-4, "time": 1.0},
        {"step": 2, "seen": 200, "loss": 3.9, "lr": 1e-4, "time": 2.0},
    ],
    "evals": [
        {"step": 0, "seen": 0, "loss": 4.2, "accuracy": None, "time": 0.0},
        {"step": 2, "seen": 200, "loss": 3.8, "accuracy": None, "time": 2.0},
    ],
}


class WithToDict:
    def __init__(self, data):
        self.data = data

    def to_dict(self):
        return self.data


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_curves_one_line_per_history_in_either_layout(backend):
    histories = {"random": RECORDS_HISTORY, "subclone": WithToDict(TRAIN_LAYOUT_HISTORY)}
    fig = plots.loss_curves(histories, backend=backend)
    check_type(fig, backend)
    if backend == "plotly":
        random, subclone = fig.data
        assert (random.name, subclone.name) == ("random", "subclone")
        np.testing.assert_allclose(random.x, [0, 2])
        np.testing.assert_allclose(random.y, [10.0, 8.8])
        np.testing.assert_allclose(subclone.y, [4.2, 3.8])
    else:
        random, subclone = fig.axes[0].get_lines()
        np.testing.assert_allclose(random.get_ydata(), [10.0, 8.8])
        np.testing.assert_allclose(subclone.get_ydata(), [4.2, 3.8])


def test_loss_curves_train_loss_against_tokens_and_list_input():
    fig = plots.loss_curves([RECORDS_HISTORY, TRAIN_LAYOUT_HISTORY], metric="train_loss", x="tokens")
    random, subclone = fig.data
    assert random.name == "random"  # labelled by the histories' own labels
    np.testing.assert_allclose(random.x, [100, 200])
    np.testing.assert_allclose(subclone.y, [4.0, 3.9])
    assert fig.layout.xaxis.title.text == "tokens seen"


def test_loss_curves_rejects_unknown_metric_axis_and_history():
    with pytest.raises(ValueError, match="eval_loss, train_loss, eval_accuracy"):
        plots.loss_curves({}, metric="perplexity")
    with pytest.raises(ValueError, match="'step' or 'tokens'"):
        plots.loss_curves({}, x="time")
    with pytest.raises(ValueError, match="not a training history"):
        plots.loss_curves({"a": {"label": "a"}})


# ------------------------------------------------------------------------------------------ size grid


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("quantity", ["loss", "params", "flops_per_token", "latency", "memory"])
def test_size_grid_heatmap_shows_the_quantity_and_outlines_the_selection(backend, quantity):
    grid = synthetic_grid()
    fig = plots.size_grid(grid, quantity, selected=(1, 0), backend=backend)
    check_type(fig, backend)
    expected = getattr(grid, quantity) * {"latency": 1e3, "memory": 2.0**-20}.get(quantity, 1)  # ms, MiB
    if backend == "plotly":
        z = np.array(fig.data[0].z, dtype=float)
        np.testing.assert_array_equal(np.isnan(z), np.isnan(expected))
        np.testing.assert_allclose(z[~np.isnan(z)], expected[~np.isnan(expected)])
        (outline,) = fig.layout.shapes
        assert (outline.x0, outline.x1, outline.y0, outline.y1) == (-0.5, 0.5, 0.5, 1.5)
        assert list(fig.layout.xaxis.ticktext) == ["8", "16"] and list(fig.layout.yaxis.ticktext) == ["2", "4"]
        assert "made-up reason" in fig.data[0].customdata[1][1]
        assert fig.data[0].text[1][1] == "n/a"
    else:
        ax = fig.axes[0]
        np.testing.assert_allclose(ax.images[0].get_array().filled(np.nan)[0], expected[0])
        (outline,) = [p for p in ax.patches if p.get_gid() == "selected"]
        assert outline.get_xy() == (-0.5, 0.5)


def test_size_grid_accepts_its_dict_and_rejects_bad_input():
    grid = synthetic_grid()
    fig = plots.size_grid(grid.to_dict(), "params")
    assert math.isnan(fig.data[0].z[1][1]) and fig.data[0].z[0][1] == 200.0
    with pytest.raises(ValueError, match="loss, params, flops_per_token, latency, memory"):
        plots.size_grid(grid, "volume")
    assert plots.size_grid(grid, "latency").data[0].text[0][1] == "2"  # milliseconds
    with pytest.raises(ValueError, match="outside the 2 x 2 grid"):
        plots.size_grid(grid, selected=(2, 0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_pareto_highlights_the_cells_no_other_beats(backend):
    grid = synthetic_grid()  # (latency ms, loss): 2x8 (1, 5.0), 2x16 (2, 4.0), 4x8 (3, 4.5, beaten by 2x16)
    fig = plots.size_pareto(grid, "latency", backend=backend)
    check_type(fig, backend)
    if backend == "plotly":
        front, others = fig.data
        assert front.name == "Pareto front" and list(front.text) == ["2 x 8", "2 x 16"]
        np.testing.assert_allclose(front.x, [1.0, 2.0])
        np.testing.assert_allclose(front.y, [5.0, 4.0])
        assert list(others.text) == ["4 x 8"] and others.y[0] == 4.5
    else:
        front, others = fig.axes[0].lines
        np.testing.assert_allclose(front.get_xdata(), [1.0, 2.0])
        np.testing.assert_allclose(others.get_ydata(), [4.5])
    on_memory = plots.size_pareto(grid.to_dict(), "memory")  # 4x8 is cheaper in memory than 2x16: all three
    assert sorted(on_memory.data[0].text) == ["2 x 16", "2 x 8", "4 x 8"]
    with pytest.raises(ValueError, match="params, flops_per_token, latency, memory"):
        plots.size_pareto(grid, "loss")


def speedup_record(label, parameters, **speedups):
    """A size record of the speedup study with hand-made speedups: init -> (per step, per second, kind)."""
    kinds = {"reached": (False, True), "lower bound": (True, True), "not reached": (False, False)}
    return {
        "label": label,
        "parameters": parameters,
        "speedups": {
            init: {
                "speedup": step,
                "speedup_per_second": second,
                "speedup_lower_bound": kinds[kind][0],
                "reached": kinds[kind][1],
            }
            for init, (step, second, kind) in speedups.items()
        },
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_speedup_by_size_draws_each_init_per_step_and_per_second_by_parameters(backend):
    sizes = [
        speedup_record(
            "20 x 384",
            40e6,
            random=(1.0, 1.0, "reached"),
            subclone=(4.0, 3.5, "reached"),
            **{"subclone+distill": (6.0, 3.0, "lower bound")},
        ),
        speedup_record("8 x 288", 20e6, random=(1.0, 1.0, "reached"), subclone=(0.5, 0.4, "not reached")),
    ]
    fig = plots.speedup_by_size(sizes, backend=backend)
    check_type(fig, backend)
    if backend == "plotly":
        lines = {trace.name: trace for trace in fig.data}
        assert sorted(lines) == [
            "subclone+distill, per optimizer step",
            "subclone+distill, per second of training",
            "subclone, per optimizer step",
            "subclone, per second of training",
        ]
        step = lines["subclone, per optimizer step"]
        assert list(step.x) == [20.0, 40.0] and list(step.y) == [0.5, 4.0]  # sorted by size
        assert list(step.marker.symbol) == ["triangle-down", "circle"]
        assert list(lines["subclone, per second of training"].marker.symbol) == ["triangle-down-open", "circle-open"]
        assert list(lines["subclone+distill, per second of training"].y) == [3.0]
        assert fig.layout.yaxis.type == "log"
        assert list(fig.layout.yaxis.ticktext) == ["0.25x", "0.5x", "1x", "2x", "4x", "8x"]  # speedups double
        label = next(a for a in fig.layout.annotations if a.text == "random init")
        assert label.y == 0.0  # log10(1): on the 1x line, not at 10x
    else:
        labels = [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")]
        assert "subclone+distill, per second of training" in labels
    with pytest.raises(ValueError, match="missing \\['parameters'\\]"):
        plots.speedup_by_size([{"label": "x", "speedups": {}}])


@pytest.mark.parametrize("backend", BACKENDS)
def test_speedup_by_size_shows_the_range_over_seeds_as_error_bars(backend):
    size = speedup_record("20 x 384", 40e6, random=(1.0, 1.0, "reached"), subclone=(4.0, 3.5, "reached"))
    size["speedups"]["subclone"].update(speedup_range=[3.0, 16.0], speedup_per_second_range=[3.0, 4.0])
    fig = plots.speedup_by_size([size], backend=backend)
    if backend == "plotly":
        step = next(trace for trace in fig.data if trace.name == "subclone, per optimizer step")
        assert list(step.error_y.array) == [12.0] and list(step.error_y.arrayminus) == [1.0]
        assert "seeds 3.00-16.00x" in step.customdata[0][1]
        assert list(fig.layout.yaxis.ticktext)[-1] == "16x"  # the axis holds the whole range
    else:
        bars = [c for c in fig.axes[0].containers if type(c).__name__ == "ErrorbarContainer"]
        assert len(bars) == 2  # per step and per second
    unseeded = plots.speedup_by_size([speedup_record("8 x 288", 20e6, subclone=(2.0, 2.0, "reached"))])
    assert all(trace.error_y.array is None for trace in unseeded.data)
