"""Size-grid decisions robust to timing noise: latency measured with repeats and kept with its spread, and a
Pareto front that does not rank two cells whose latencies differ by less than their spreads.

The front is checked on hand-made grids whose numbers are known (the case of issue 24: 25 x 192 timed at
0.347 ms against 0.414 ms for 20 x 192, within the noise of a busy machine); the repeats on a tiny model.
"""

from __future__ import annotations

import numpy as np
import pytest

import subclone_viz as sv
from subclone_viz import plots, sizing
from tiny import tiny_batches, tiny_model


def grid_of(latency, spread, loss) -> sv.SizeGrid:
    """A one-width grid of len(loss) depths with the given latencies (ms), spreads (ms) and losses."""
    rows = len(loss)
    column = lambda values: np.array(values, dtype=float).reshape(rows, 1)  # noqa: E731
    return sv.SizeGrid(
        parent="made-up",
        layers=[20 + 5 * i for i in range(rows)],
        hidden=[192],
        params=column(range(1, rows + 1)) * 1e6,
        flops_per_token=column(range(1, rows + 1)) * 1e6,
        loss=column(loss),
        reasons=[[None]] * rows,
        dims=[[None]] * rows,
        depth="middle",
        width="importance",
        scaling="sqrt",
        seq_len=64,
        eval_source="made up",
        latency=column(latency) / 1e3,
        latency_spread=column(spread) / 1e3,
        memory=column(range(1, rows + 1)) * 1e6,
    )


def test_cells_within_the_noise_are_not_ranked() -> None:
    # 20 x 192 (0.414 ms) and 25 x 192 (0.347 ms, lower loss): spreads of 0.05 ms make them indistinguishable.
    noisy = grid_of([0.414, 0.347], [0.05, 0.05], [7.9, 7.2])
    assert noisy.pareto_front("latency").ravel().tolist() == [True, True]
    # With tight spreads the same numbers are a real difference, and 25 x 192 beats 20 x 192.
    tight = grid_of([0.414, 0.347], [0.005, 0.005], [7.9, 7.2])
    assert tight.pareto_front("latency").ravel().tolist() == [False, True]


def test_exact_costs_keep_the_plain_front() -> None:
    grid = grid_of([0.3, 0.3, 0.45], [0.1, 0.1, 0.1], [8.0, 7.0, 7.5])
    # params are exact: cell 1 (2M, 7.0) beats cell 2 (3M, 7.5); cell 0 (1M, 8.0) is cheapest.
    assert grid.pareto_front("params").ravel().tolist() == [True, True, False]
    assert (grid.spread("params") == 0).all()
    # latency 0.3 ± 0.1 vs 0.45 ± 0.1: a gap of 0.15 is within the noise, so cell 2 is not beaten...
    assert grid.pareto_front("latency").ravel().tolist() == [True, True, True]
    # ... but at 0.65 ms it is.
    assert grid_of([0.3, 0.3, 0.65], [0.1, 0.1, 0.1], [8.0, 7.0, 7.5]).pareto_front("latency").ravel().tolist() == [
        True,
        True,
        False,
    ]


def test_grids_without_a_spread_rank_as_before() -> None:
    grid = grid_of([0.414, 0.347], [np.nan, np.nan], [7.9, 7.2])
    assert grid.pareto_front("latency").ravel().tolist() == [False, True]
    written = grid.to_dict()
    older = {k: v for k, v in written.items() if k != "latency_spread"}
    assert np.isnan(sv.SizeGrid.from_dict(older).latency_spread).all()
    np.testing.assert_array_equal(sv.SizeGrid.from_dict(written).latency, grid.latency)


def test_the_figures_show_the_spread() -> None:
    grid = grid_of([0.414, 0.347], [0.05, 0.02], [7.9, 7.2])
    pareto = plots.size_pareto(grid, "latency")
    bars = {x: e for trace in pareto.data for x, e in zip(trace.x, trace.error_x.array)}
    assert bars == pytest.approx({0.414: 0.05, 0.347: 0.02})
    assert "0.347 ± 0.02 ms" in plots.size_grid(grid, "latency").data[0].customdata[1][0]
    assert not plots.size_pareto(grid, "params").data[0].error_x.visible


def test_latency_is_the_median_of_repeats_with_its_spread() -> None:
    parent = sv.load_parent(tiny_model("llama"))
    batches = tiny_batches("llama", count=1, pad=False)
    calls = []
    model = parent.model
    original = parent.family.logits

    def counted(model, batch):
        calls.append(1)
        return original(model, batch)

    family = type("Counted", (), {"logits": staticmethod(counted)})()
    latency, spread, memory = sizing._latency_and_memory(family, model, batches[0])
    assert len(calls) == sizing.LATENCY_REPEATS + 1  # one for memory, then the repeats
    assert latency > 0 and 0 <= spread < latency * 10 and memory > 0
    grid = sv.size_grid(
        parent, sv.profile(parent, batches, progress=False), [2], [24], batches, cache=False, progress=False
    )
    assert np.isfinite(grid.latency_spread).all() and (grid.latency_spread >= 0).all()
