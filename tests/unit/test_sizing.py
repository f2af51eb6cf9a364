"""The size grid: each cell's numbers against an independent computation, invalid cells, and the disk cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz import sizing
from subclone_viz._atomic import read_cache_file
from subclone_viz.families import family_of
from subclone_viz.parent import Parent
from tiny import VOCAB, tiny_batches, tiny_model


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A fresh cache per test, so that every cache hit counted here was made by the same test."""
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def llama():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama", count=2)
    return parent, sv.profile(parent, batches, progress=False), batches


def llama_matmul_weights(dims: dict) -> int:
    """Every linear layer of a Llama, written out: q, k, v, o, gate, up, down per block, and the LM head."""
    hidden, ffn, head_dim = dims["hidden"], dims["ffn"], dims["head_dim"]
    attention = hidden * dims["heads"] * head_dim * 2 + hidden * dims["kv_heads"] * head_dim * 2
    return dims["layers"] * (attention + 3 * hidden * ffn) + VOCAB * hidden


def test_each_cell_matches_its_own_subclone(llama):
    parent, prof, batches = llama
    grid = sv.size_grid(parent, prof, [2, 4], [24, 48], batches, progress=False)
    assert grid.shape == (2, 2) and grid.seq_len == 12
    for i in range(2):
        for j in range(2):
            child = sv.subclone(parent, sv.plan(parent, prof, grid.spec(i, j)))
            dims = grid.dims[i][j]
            assert grid.params[i, j] == sum(p.numel() for p in child.parameters())
            expected_flops = 2 * llama_matmul_weights(dims) + 4 * dims["layers"] * 12 * dims["heads"] * dims["head_dim"]
            assert grid.flops_per_token[i, j] == expected_flops
            assert grid.loss[i, j] == pytest.approx(sv.evaluate(child, parent.family, batches).loss, rel=1e-6)
    # The full-size cell keeps every block and neuron: it is the parent, reordered.
    assert grid.loss[1, 1] == pytest.approx(sv.evaluate(parent.model, parent.family, batches).loss, rel=1e-5)
    assert grid.params[0, 0] < grid.params[0, 1] < grid.params[1, 1]


def test_invalid_cells_are_nan_with_the_reason(llama):
    parent, prof, batches = llama
    grid = sv.size_grid(parent, prof, [2, 6], [24, 60], batches, depth="first", progress=False)
    assert grid.reasons[0][0] is None and np.isfinite(grid.loss[0, 0])
    assert "deeper than the parent's 4" in grid.reasons[1][0]  # depth="first" cannot grow depth
    assert "1 <= hidden <= 48" in grid.reasons[0][1]
    for quantity in sizing.QUANTITIES:
        values = getattr(grid, quantity)
        assert np.isnan(values[1]).all() and np.isnan(values[:, 1]).all()


def test_gpt2_widths_must_be_multiples_of_the_head_size():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    batches = tiny_batches("gpt2", count=1)
    grid = sv.size_grid(parent, None, [2], [12, 16], batches, width="uniform", progress=False)
    assert "not a multiple of the head size 8" in grid.reasons[0][0] and math.isnan(grid.params[0, 0])
    assert grid.reasons[0][1] is None and grid.params[0, 1] > 0


def test_an_encoder_without_a_head_gets_sizes_but_no_loss():
    parent = sv.load_parent(tiny_model("bert"), device="cpu")
    batches = tiny_batches("bert", count=1)
    grid = sv.size_grid(parent, sv.profile(parent, batches, progress=False), [2], [16], batches, progress=False)
    assert grid.params[0, 0] > 0 and grid.flops_per_token[0, 0] > 0 and math.isnan(grid.loss[0, 0])


def test_image_cells_count_patch_tokens_in_the_attention_flops():
    parent = sv.load_parent(tiny_model("vit"), device="cpu")
    batches = tiny_batches("vit", count=1)
    grid = sv.size_grid(parent, None, [2], [32], batches, width="first", progress=False)
    assert grid.seq_len == (16 // 4) ** 2 + 1  # 16 patches and the cls token
    assert np.isfinite(grid.loss[0, 0])


def test_a_second_run_reads_every_cell_from_the_cache(llama, monkeypatch):
    parent, prof, batches = llama
    first = sv.size_grid(parent, prof, [1, 3], [15, 30], batches, progress=False)
    calls = []
    measure = sizing._measure_cell
    monkeypatch.setattr(sizing, "_measure_cell", lambda *args: calls.append(args) or measure(*args))
    again = sv.size_grid(parent, prof, [1, 3], [15, 30], batches, progress=False)
    assert calls == [] and again.cache_hits == 4
    for quantity in sizing.QUANTITIES:
        np.testing.assert_array_equal(getattr(again, quantity), getattr(first, quantity))
    assert again.dims == first.dims
    # A grid that shares one cell with the first one only measures the new ones.
    sv.size_grid(parent, prof, [3], [30, 42], batches, progress=False)
    assert len(calls) == 1
    files = list((sv.cache_dir() / "size_grid").glob("*.json"))
    assert all(json.loads(read_cache_file(f))["key"]["spec"] for f in files)  # each with its checksum


@pytest.mark.parametrize("change", ["batches", "scaling", "profile", "seq_len"])
def test_the_cache_key_sees_what_changes_a_cell(llama, monkeypatch, change):
    parent, prof, batches = llama
    sv.size_grid(parent, prof, [2], [24], batches, progress=False)
    calls = []
    measure = sizing._measure_cell
    monkeypatch.setattr(sizing, "_measure_cell", lambda *args: calls.append(args) or measure(*args))
    kwargs = dict(progress=False)
    if change == "batches":
        batches = tiny_batches("llama", count=2, seed=7)
    elif change == "scaling":
        kwargs["scaling"] = "none"
    elif change == "profile":
        prof = sv.profile(parent, tiny_batches("llama", count=1, seed=7), progress=False)
    else:
        kwargs["seq_len"] = 2048
    grid = sv.size_grid(parent, prof, [2], [24], batches, **kwargs)
    assert len(calls) == 1 and grid.cache_hits == 0


def test_cache_off_and_a_corrupt_cache_file_both_measure_again(llama, monkeypatch):
    parent, prof, batches = llama
    sv.size_grid(parent, prof, [2], [42], batches, progress=False)
    calls = []
    measure = sizing._measure_cell
    monkeypatch.setattr(sizing, "_measure_cell", lambda *args: calls.append(args) or measure(*args))
    sv.size_grid(parent, prof, [2], [42], batches, cache=False, progress=False)
    assert len(calls) == 1
    for path in (sv.cache_dir() / "size_grid").glob("*.json"):
        path.write_text("{ half a file")
    grid = sv.size_grid(parent, prof, [2], [42], batches, progress=False)
    assert len(calls) == 2 and np.isfinite(grid.loss[0, 0])


def test_bad_strategies_and_inputs_fail_before_any_cell(llama):
    parent, prof, batches = llama
    with pytest.raises(sv.SpecError, match="middle, first, last, metric"):
        sv.size_grid(parent, prof, [2], [24], batches, depth="centre", progress=False)
    with pytest.raises(sv.SpecError, match="sqrt, none, calibrated"):
        sv.size_grid(parent, prof, [2], [24], batches, scaling="cubic", progress=False)
    with pytest.raises(sv.SpecError, match="need a profile"):
        sv.size_grid(parent, None, [2], [24], batches, progress=False)
    with pytest.raises(ValueError, match="eval_batches is empty"):
        sv.size_grid(parent, prof, [2], [24], [], progress=False)
    with pytest.raises(ValueError, match="at least one layer count"):
        sv.size_grid(parent, prof, [], [24], batches, progress=False)


def test_grid_records_round_trip_and_name_their_specs(llama):
    parent, prof, batches = llama
    grid = sv.size_grid(parent, prof, [2, 9], [24], batches, depth="last", progress=False)
    assert grid.spec(0, 0) == sv.DestinationSpec(layers=2, hidden=24)
    with pytest.raises(IndexError, match="outside the 2 x 1 grid"):
        grid.spec(2, 0)
    data = json.loads(json.dumps(grid.to_dict()))  # plain JSON: NaN became null
    assert data["loss"][1][0] is None
    again = sv.SizeGrid.from_dict(data)
    np.testing.assert_array_equal(again.loss, grid.loss)
    assert again.reasons == grid.reasons and again.layers == [2, 9]


def test_default_axes_span_smollm2_shaped_parent():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=VOCAB,
    )
    with torch.device("meta"):  # only the shape matters: no weights are made
        model = LlamaForCausalLM(config)
    parent = Parent(model=model, processor=None, family=family_of(model), name="smollm2-shaped")
    assert sv.default_grid_axes(parent) == ([6, 10, 15, 20, 25, 30], [192, 288, 384, 480, 576])


def test_default_axes_of_a_tiny_gpt2_are_valid_widths():
    parent = sv.load_parent(tiny_model("gpt2"), device="cpu")
    layers, hidden = sv.default_grid_axes(parent)
    assert layers == [1, 2, 3, 4]
    assert hidden == [8, 16, 24, 32]  # multiples of the head size 8, up to the parent's 32


def test_cells_of_one_width_resume_after_their_shared_blocks(llama, monkeypatch):
    """Suffix reuse: a cell runs only the blocks after those it shares with the previous cell of its width, and
    its loss is still, bit for bit, that of its own subclone's whole forward."""
    parent, prof, batches = llama
    starts = []
    resumed = sizing.resumed
    monkeypatch.setattr(
        sizing,
        "resumed",
        lambda family, model, start, *rest: starts.append(start) or resumed(family, model, start, *rest),
    )
    grid = sv.size_grid(parent, prof, [2, 3, 4], [24, 48], batches, progress=False)
    # Middle depth keeps blocks [0, 3], then [0, 1, 3] (resumes after block 0), then [0, 1, 2, 3] (after 0, 1).
    assert starts == [1] * len(batches) + [2] * len(batches) + [1] * len(batches) + [2] * len(batches)
    with torch.no_grad():
        for i in range(3):
            for j in range(2):
                child = sv.subclone(parent, sv.plan(parent, prof, grid.spec(i, j)))
                assert grid.loss[i, j] == sv.evaluate(child, parent.family, batches).loss


def test_cells_carry_measured_latency_and_memory_and_a_pareto_front(llama):
    parent, prof, batches = llama
    grid = sv.size_grid(parent, prof, [2, 4], [24, 48, 20], batches, progress=False)  # 20: no head count fits
    valid = np.isfinite(grid.params)
    assert not valid[:, 2].any() and np.isnan(grid.latency[:, 2]).all() and np.isnan(grid.memory[:, 2]).all()
    assert (grid.latency[valid] > 0).all() and "cpu" in grid.device
    # The peak holds the fp32 weights and at least the logits of the batch (2 x 12 tokens x 97).
    assert (grid.memory[valid] >= grid.params[valid] * 4 + 2 * 12 * VOCAB * 4).all()
    assert grid.memory[1, 1] > grid.memory[0, 0]
    front = grid.pareto_front("latency")
    assert front.shape == grid.shape and not front[:, 2].any()
    for cost in sizing.COSTS:
        costs = np.where(valid, grid.quantity(cost), np.inf)
        on_front = grid.pareto_front(cost)
        assert on_front[np.unravel_index(np.argmin(np.where(valid, grid.loss, np.inf)), grid.shape)]
        cheapest = np.flatnonzero(costs == costs.min())
        assert on_front.ravel()[cheapest].any()  # the cheapest cell (or one of equally cheap ones) is on it
    with pytest.raises(ValueError, match="cost='loss'"):
        grid.pareto_front("loss")
    written = grid.to_dict()
    np.testing.assert_array_equal(sv.SizeGrid.from_dict(written).latency, grid.latency)
    older = {k: v for k, v in written.items() if k not in ("latency", "memory", "device")}
    assert np.isnan(sv.SizeGrid.from_dict(older).latency).all()  # grids saved before these were measured


@pytest.fixture(scope="module")
def mixtral():
    parent = sv.load_parent(tiny_model("mixtral"), device="cpu")  # 4 blocks x 32, 6 experts of width 24, top-2
    batches = tiny_batches("mixtral", count=2)
    return parent, sv.profile(parent, batches, progress=False), batches


def test_moe_grid_over_layers_and_experts_counts_active_parameters(mixtral):
    from subclone_viz.experts import parameter_counts

    parent, prof, batches = mixtral
    grid = sv.size_grid(parent, prof, [2, 4], None, batches, experts=[2, 4, 6], progress=False)
    assert grid.axes == ["layers", "experts"] and grid.shape == (2, 3) and grid.hidden == [32]
    per_expert = 48 * 32 + 32 * 24  # fused [gate | up] (48 x 32) and down (32 x 24)
    for i, layers in enumerate([2, 4]):
        for j, experts in enumerate([2, 4, 6]):
            spec = grid.spec(i, j)
            assert (spec.layers, spec.hidden, spec.experts) == (layers, 32, experts)
            child = sv.subclone(parent, sv.plan(parent, prof, spec))
            total = sum(p.numel() for p in child.parameters())
            routed = layers * experts * per_expert
            assert grid.params[i, j] == total == parameter_counts(child, parent.family)["total"]
            assert grid.active_params[i, j] == total - routed + routed * 2 // experts
            # Every linear layer, each block's (E, d) router, and 2 of the experts each token reaches.
            dense = sizing.matmul_weights(child) + layers * experts * 32
            attention = 4 * layers * 12 * 4 * 8
            assert grid.flops_per_token[i, j] == 2 * (dense + layers * 2 * per_expert) + attention
            assert grid.loss[i, j] == pytest.approx(sv.evaluate(child, parent.family, batches).loss, rel=1e-6)
    assert grid.loss[1, 2] == pytest.approx(sv.evaluate(parent.model, parent.family, batches).loss, rel=1e-5)
    assert grid.label(0, 1) == "2 x 32, 4 experts"
    # Active parameters barely move with the experts kept (the routers' rows); total parameters do.
    assert np.ptp(grid.active_params[0]) < np.ptp(grid.params[0]) / 10
    back = sv.SizeGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert back.axes == grid.axes and back.experts == grid.experts
    np.testing.assert_array_equal(back.active_params, grid.active_params)
    np.testing.assert_array_equal(back.pareto_front("active_params"), grid.pareto_front("active_params"))


def test_moe_grid_axes_and_mistakes(mixtral):
    parent, prof, batches = mixtral
    fixed = sv.size_grid(parent, prof, [2], [16, 32], batches, experts=[4], progress=False)
    assert fixed.axes == ["layers", "hidden"] and fixed.spec(0, 1).experts == 4
    across = sv.size_grid(parent, prof, [2], [16, 32], batches, experts=[2, 6], progress=False)
    assert across.axes == ["hidden", "experts"] and across.shape == (2, 2)
    assert across.spec(1, 0) == sv.DestinationSpec(layers=2, hidden=32, experts=2)
    assert across.cache_hits == 0 and fixed.cache_hits == 0
    # Its cells with 4 experts are the first grid's and those with 2 the second's: all from the cache.
    again = sv.size_grid(parent, prof, [2], [16, 32], batches, experts=[4, 2], progress=False)
    assert again.cache_hits == 4
    np.testing.assert_array_equal(again.loss[:, 1], across.loss[:, 0])
    with pytest.raises(sv.SpecError, match=r"experts=\[7\]: each must be one of \[1, 2, 3, 4, 5, 6\]"):
        sv.size_grid(parent, prof, [2], [32], batches, experts=[7], progress=False)
    with pytest.raises(sv.SpecError, match="a size grid has two axes"):
        sv.size_grid(parent, prof, [2, 4], [16, 32], batches, experts=[2, 4], progress=False)
    dense = sv.load_parent(tiny_model("llama"), device="cpu")
    with pytest.raises(sv.SpecError, match="is dense, it has no experts"):
        sv.size_grid(dense, None, [2], [24], tiny_batches("llama"), width="uniform", experts=[2], progress=False)


def test_grids_written_before_the_experts_axis_read_as_dense(llama):
    parent, prof, batches = llama
    grid = sv.size_grid(parent, prof, [2], [24, 48], batches, progress=False)
    assert grid.experts == [] and grid.axes == ["layers", "hidden"]
    np.testing.assert_array_equal(grid.active_params, grid.params)  # dense: every parameter is active
    old = {k: v for k, v in grid.to_dict().items() if k not in ("experts", "axes", "active_params")}
    back = sv.SizeGrid.from_dict({**old, "version": 1})
    np.testing.assert_array_equal(back.active_params, grid.params)
    assert back.spec(0, 1) == grid.spec(0, 1) == sv.DestinationSpec(layers=2, hidden=48)
    for bad, message in (
        ({"axes": ["layers", "layers"]}, "'axes' must name two of"),
        ({"axes": ["layers", "experts"], "hidden": [24], "experts": []}, "'experts' must hold values"),
        ({"experts": [2, 4]}, "'experts' must hold at most one value"),
    ):
        with pytest.raises(ValueError, match=message):
            sv.SizeGrid.from_dict({**grid.to_dict(), **bad})


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_plots_show_the_experts_axis(mixtral, backend):
    from subclone_viz import plots

    parent, prof, batches = mixtral
    grid = sv.size_grid(parent, prof, [2, 4], [32], batches, experts=[2, 6], progress=False)
    heat = plots.size_grid(grid, "active_params", backend=backend)
    pareto = plots.size_pareto(grid, "active_params", backend=backend)
    if backend == "plotly":
        assert list(heat.layout.xaxis.ticktext) == ["2", "6"] and "experts" in heat.layout.xaxis.title.text
        assert "32 wide" in heat.layout.title.text
        labels = [t for trace in pareto.data for t in trace.text]
        assert sorted(labels) == ["2 x 32, 2 experts", "2 x 32, 6 experts", "4 x 32, 2 experts", "4 x 32, 6 experts"]
    else:
        assert [t.get_text() for t in heat.axes[0].get_xticklabels()] == ["2", "6"]
        assert "experts" in heat.axes[0].get_xlabel()


def test_a_plan_finds_its_cell_on_either_kind_of_grid(llama, mixtral):
    parent, prof, batches = mixtral
    grid = sv.size_grid(parent, prof, [2, 4], None, batches, experts=[2, 6], progress=False)
    chosen = sv.plan(parent, prof, sv.DestinationSpec(layers=4, hidden=32, experts=6))
    assert grid.cell_of(chosen.dims) == (1, 1)
    assert grid.cell_of(sv.plan(parent, prof, sv.DestinationSpec(layers=4, hidden=32, experts=4)).dims) is None
    parent, prof, batches = llama
    dense = sv.size_grid(parent, prof, [2, 4], [24, 48], batches, progress=False)
    assert dense.cell_of(sv.plan(parent, prof, sv.DestinationSpec(layers=2, hidden=48)).dims) == (0, 1)
    assert dense.cell_of(sv.plan(parent, prof, sv.DestinationSpec(layers=3, hidden=48)).dims) is None
