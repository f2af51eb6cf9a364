"""The studio's forecast: once a run has enough held-out evaluations, its loss at the planned end is drawn ahead
of the live curve with its interval; before that the studio says how many are missing, and a failing forecast
is one line that leaves training running. Tiny random Llama parent (tests/tiny.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import subclone_viz as sv
from subclone_viz import plots, widgets
from subclone_viz.forecast import MIN_POINTS, forecast
from subclone_viz.train import History
from tiny import tiny_batches, tiny_model

STEPS, EVERY = 10, 2  # evaluations at 0, 2, ..., 10: the forecast's minimum is reached at step 2 * MIN_POINTS


@pytest.fixture(scope="module")
def llama():
    parent = sv.load_parent(tiny_model("llama"))
    batches = tiny_batches("llama", count=2, pad=False)
    return parent, sv.profile(parent, batches, progress=False), batches


@pytest.fixture
def studio(llama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> widgets.SubcloneStudio:
    monkeypatch.setattr(widgets, "LIVE_REFRESH_SECONDS", 0.0)  # redraw on every record, as a slow run would
    parent, profile, batches = llama
    studio = widgets.SubcloneStudio(
        parent, profile, batches, batches, save_dir=tmp_path, steps=STEPS, inits=("subclone",), eval_every=EVERY
    )
    studio.hidden.value = 24
    return studio


def statuses(studio: widgets.SubcloneStudio) -> list[str]:
    seen: list[str] = []
    studio.forecast_status.observe(lambda change: seen.append(change["new"]), names="value")
    return seen


def test_the_forecast_follows_the_run_and_waits_for_enough_evaluations(studio: widgets.SubcloneStudio) -> None:
    seen = statuses(studio)
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    history = studio.comparison.histories["subclone"]
    assert [r.step for r in history.evals] == list(range(0, STEPS + 1, EVERY))
    waiting = [s for s in seen if "needed" in s]
    assert waiting and "1 more held-out evaluation needed (one every 2 steps)" in waiting[-1]
    assert f"{MIN_POINTS} more held-out evaluations needed" in waiting[0]
    expected = forecast(history)  # the last redraw forecast the finished run
    assert studio.last_forecast is not None and studio.last_forecast.loss == pytest.approx(expected.loss)
    assert "forecast, not measured" in studio.forecast_status.value
    assert f"{expected.loss:.3f}" in studio.forecast_status.value
    names = [t.name for t in studio.forecast_figure.data]
    assert "forecast" in names and "80% interval" in names
    band = next(t for t in studio.forecast_figure.data if t.name == "80% interval")
    assert list(band.y) == pytest.approx(expected.curve_high + expected.curve_low[::-1])
    assert studio.forecast_figure.layout.title.text.startswith("Forecast of subclone")


def test_the_first_forecasts_appear_while_training(studio: widgets.SubcloneStudio) -> None:
    forecasts = []
    original = studio.draw_forecast

    def record(label, history):
        result = original(label, history)
        if result is not None:
            forecasts.append((history.last_step, result.horizon))
        return result

    studio.draw_forecast = record
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    assert forecasts[0][0] < STEPS  # before the run ended
    assert {horizon for _, horizon in forecasts} == {STEPS}


def test_a_failing_forecast_is_one_line_and_training_goes_on(
    studio: widgets.SubcloneStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(curve):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(widgets, "forecast", broken)
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    assert studio.comparison is not None and studio.comparison.histories["subclone"].last_step == STEPS
    assert "no forecast of subclone: RuntimeError: boom second line" in studio.forecast_status.value
    assert studio.last_forecast is None


def test_a_diverged_run_names_the_bad_loss(studio: widgets.SubcloneStudio, llama) -> None:
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    history = studio.comparison.histories["subclone"]
    history.evals[2].loss = float("nan")
    assert studio.draw_forecast("subclone", history) is None
    assert "no forecast of subclone: the loss at step 4 is nan" in studio.forecast_status.value


def test_a_live_redraw_gives_the_shown_traces_new_data_in_one_message_a_figure(studio: widgets.SubcloneStudio) -> None:
    studio.train_button.click()
    studio.training_thread.join(timeout=120)
    history = studio.comparison.histories["subclone"]
    for metric, figure in studio.curve_figures.items():
        _, xs, ys, _ = plots.history_series(history, metric)
        (trace,) = figure.data
        assert list(trace.x) == list(xs) and list(trace.y) == pytest.approx(list(ys))
    (fitted_until,) = studio.forecast_figure.layout.shapes
    assert fitted_until.x0 == fitted_until.x1 == studio.last_forecast.fitted_until
    shorter = History.from_dict(history.to_dict())  # the run one evaluation earlier
    shorter.steps = [r for r in shorter.steps if r.step <= STEPS - EVERY]
    shorter.evals = [r for r in shorter.evals if r.step <= STEPS - EVERY]
    studio.live_histories = {"subclone": shorter}
    studio._draw_curves()
    assert studio.last_forecast.fitted_until == STEPS - EVERY
    sent: list[str] = []
    kinds = ["_py2js_addTraces", "_py2js_deleteTraces", "_py2js_restyle", "_py2js_relayout", "_py2js_update"]
    for figure in [*studio.curve_figures.values(), studio.forecast_figure]:
        figure.observe(lambda change: sent.append(change["name"]) if change["new"] else None, names=kinds)
    studio.live_histories = {"subclone": history}
    studio._draw_curves()
    assert sent == ["_py2js_update"] * 3  # the curves and the forecast: one Plotly.update each, traces kept
    assert list(studio.curve_figures["eval_loss"].data[0].x)[-1] == STEPS
    assert studio.last_forecast.fitted_until == STEPS == studio.forecast_figure.layout.shapes[0].x0
