"""The budget chooser on a tiny Llama: steps per cell under token and FLOPs budgets, pilots under the whole
run's schedule, the pilot cache (hits, a damaged file retrained), re-forecasts, the record, and the plots."""

from __future__ import annotations

import pytest

import subclone_viz as sv
from subclone_viz import plots
from subclone_viz._atomic import DamagedFileError
from subclone_viz.budget import BudgetError, BudgetGrid, budget_grid
from subclone_viz.data import cache_dir
from subclone_viz.forecast import ForecastPrior, forecast
from tiny import tiny_batches, tiny_model

PRIOR = ForecastPrior(C=0.05, decay=0.9, C_spread=0.01, scale=1.5, source="test")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def llama():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    train = tiny_batches("llama", count=4, pad=False)
    heldout = tiny_batches("llama", count=2, pad=False, seed=5)
    return parent, sv.profile(parent, train, progress=False), train, heldout


def grid_of(llama, **kwargs):
    parent, prof, train, heldout = llama
    kwargs.setdefault("tokens", 24 * 48)
    return budget_grid(parent, prof, [2, 4], [24, 48], train, heldout, prior=PRIOR, progress=False, **kwargs)


def test_token_budget_pilots_every_cell_and_forecasts_with_intervals(llama):
    grid = grid_of(llama, inits=("subclone", "random"))
    assert grid.tokens_per_step == 24 and len(grid.cells) == 8
    for cell in grid.cells:
        assert cell["steps"] == 48 and cell["pilot_steps"] == 12 and cell["pilot"]["steps"][-1] == 12
        assert cell["forecast"]["low"] <= cell["forecast"]["loss"] <= cell["forecast"]["high"]
    # The pilot trained under the whole run's schedule: the forecast of its curve is what the grid holds.
    cell = grid.cells[0]
    settings = sv.TrainSettings(steps=48, lr=grid.lrs[cell["init"]], final_lr_ratio=0.1)
    curve = sv.LearningCurve(cell["pilot"]["steps"], cell["pilot"]["losses"], settings.learning_rates())
    assert forecast(curve, prior=PRIOR).loss == pytest.approx(cell["forecast"]["loss"])
    best = grid.best()
    pilots = sum(c["params"] * c["pilot_steps"] for c in grid.cells)
    assert grid.pilot_cost == pytest.approx(pilots / (best["params"] * best["steps"]))
    assert grid.best() in grid.cells and grid.pareto_front("params")


def test_flops_budget_is_iso_compute(llama):
    grid = grid_of(llama, tokens=None, flops=6 * 40_000 * 24 * 60)
    by_params = sorted(grid.cells, key=lambda c: c["params"])
    assert by_params[0]["steps"] > by_params[-1]["steps"]  # the smallest trains the longest
    for cell in grid.cells:
        assert cell["steps"] == int(grid.flops / (6 * cell["params"]) // 24)


def test_pilots_are_cached_and_a_damaged_pilot_is_retrained(llama):
    first = grid_of(llama)
    again = grid_of(llama)
    assert first.cache_hits == 0 and again.cache_hits == 4
    assert [c["forecast"] for c in again.cells] == [c["forecast"] for c in first.cells]
    damaged = sorted((cache_dir() / "budget_pilots").iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:-9])
    third = grid_of(llama)
    assert third.cache_hits == 3


def test_reforecast_at_another_budget_needs_no_training(llama):
    grid = grid_of(llama)
    longer = grid.at(tokens=24 * 96)
    assert all(c["steps"] == 96 for c in longer.cells)
    assert [c["pilot"] for c in longer.cells] == [c["pilot"] for c in grid.cells]
    with pytest.raises(BudgetError, match="fewer than its pilot"):
        grid.at(tokens=24 * 6)


def test_bad_budgets_are_refused_before_any_work(llama):
    parent, prof, train, heldout = llama
    for kwargs, message in (
        (dict(), "one budget"),
        (dict(tokens=10, flops=10), "one budget"),
        (dict(tokens=-5), "positive"),
        (dict(tokens=100, pilot_fraction=0), "pilot_fraction"),
        (dict(tokens=100, inits=("warm",)), "choose from"),
        (dict(tokens=24 * 4), "a pilot needs"),
    ):
        with pytest.raises(BudgetError, match=message):
            budget_grid(parent, prof, [2], [24], train, heldout, progress=False, **kwargs)


def test_record_round_trip_and_damage(llama, tmp_path):
    grid = grid_of(llama)
    path = grid.save(tmp_path / "budget.json")
    assert BudgetGrid.load(path) == grid
    path.write_text(path.read_text().replace('"tokens_per_step"', '"tokens_each"'))
    with pytest.raises(DamagedFileError, match="budget.json"):
        BudgetGrid.load(path)


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_budget_and_forecast_plots(llama, backend):
    grid = grid_of(llama, inits=("subclone", "random"))
    fig = plots.budget_pareto(grid, cost="params", backend=backend)
    if backend == "plotly":
        assert [t.name for t in fig.data] == ["subclone", "random", "Pareto front"]
        assert fig.data[0].error_y.array is not None
    else:
        assert fig.axes[0].get_legend() is not None
    lrs = sv.TrainSettings(steps=200, lr=1e-3, final_lr_ratio=0.1).learning_rates()
    curve = sv.LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.05, decay=0.9, every=10).head(60)
    band = plots.forecast_band(curve, forecast(curve, prior=PRIOR), backend=backend)
    if backend == "plotly":
        assert [t.name for t in band.data] == ["80% interval", "forecast", "evaluated"]
        assert len(band.data[2].x) == 6


def test_budget_explorer_reforecasts_from_the_pilots(llama):
    from subclone_viz.widgets import BudgetExplorer

    grid = grid_of(llama, inits=("subclone", "random"))
    explorer = BudgetExplorer(grid)
    assert "forecast best" in explorer.info.value and len(explorer.figure.data) == 3
    explorer.budget.value = grid.tokens * 4
    assert all(c["steps"] == 4 * 48 for c in explorer.grid.cells)
    assert explorer.grid.cells[0]["pilot"] == grid.cells[0]["pilot"]
    explorer.cost.value = "latency"
    assert "latency" in explorer.figure.layout.xaxis.title.text
    explorer.show(grid.tokens / 100, "params")  # below the pilots' length: one line in the view
    assert "fewer than its pilot" in explorer.info.value


def test_flops_budget_counts_a_mixture_of_experts_by_its_active_parameters():
    from subclone_viz.experts import parameter_counts

    parent = sv.load_parent(tiny_model("mixtral"), device="cpu")  # top-2 of 6 experts: a third of them active
    train = tiny_batches("mixtral", count=4, pad=False)
    heldout = tiny_batches("mixtral", count=2, pad=False, seed=5)
    prof = sv.profile(parent, train, progress=False)
    grid = budget_grid(
        parent, prof, [2, 4], [32], train, heldout, flops=6 * 20_000 * 24 * 60, prior=PRIOR, progress=False
    )
    for cell in grid.cells:
        child = sv.subclone(parent, sv.plan(parent, prof, sv.DestinationSpec(cell["layers"], cell["hidden"])))
        counts = parameter_counts(child, parent.family)
        assert (cell["params"], cell["active_params"]) == (counts["total"], counts["active"])
        assert cell["active_params"] < cell["params"]
        assert cell["steps"] == int(grid.flops / (6 * cell["active_params"]) // 24)  # not by the total
    best = grid.best()
    pilots = sum(c["active_params"] * c["pilot_steps"] for c in grid.cells)
    assert grid.pilot_cost == pytest.approx(pilots / (best["active_params"] * best["steps"]))
    back = BudgetGrid.from_dict(grid.to_dict())
    assert back.cells == grid.cells
    old = BudgetGrid.from_dict(
        {**grid.to_dict(), "cells": [{k: v for k, v in c.items() if k != "active_params"} for c in grid.cells]}
    )
    assert old.pilot_cost == pytest.approx(
        sum(c["params"] * c["pilot_steps"] for c in grid.cells) / (best["params"] * best["steps"])
    )
