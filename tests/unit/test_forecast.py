"""Loss forecasts on synthetic curves with known parameters: recovery, every schedule the library trains with,
interval coverage on held-out synthetic runs, the refusals, CSV logs, histories, and the records."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import subclone_viz as sv
from subclone_viz._atomic import DamagedFileError
from subclone_viz.choices import SCHEDULES
from subclone_viz.errors import UserError
from subclone_viz.forecast import (
    MIN_POINTS,
    Forecast,
    ForecastPrior,
    LearningCurve,
    NonFiniteLossError,
    ScheduleTooShortError,
    TooFewPointsError,
    _final_areas,
    forecast,
    schedule_areas,
    steps_to_reach,
    stretch_schedule,
)
from subclone_viz.records import load_record
from subclone_viz.train import EvalRecord, History, StepRecord, TrainSettings


def rates(steps=400, **settings):
    return TrainSettings(steps=steps, lr=1e-3, **settings).learning_rates()


# ---------------------------------------------------------------------------------------------- schedules


def test_final_lr_ratio_and_wsd_shape_the_schedule():
    cosine = rates(schedule="cosine", final_lr_ratio=0.1, warmup=20)
    assert cosine[19] == pytest.approx(1e-3 * 20 / 21) and cosine[20] == pytest.approx(1e-3)
    assert 1e-4 < cosine[-1] < 1.01e-4  # towards 10% of the peak, never below it
    linear = rates(schedule="linear", final_lr_ratio=0.25, warmup=0)
    assert np.allclose(np.diff(linear), np.diff(linear)[0]) and linear[-1] > 0.25e-3
    wsd = rates(schedule="wsd", final_lr_ratio=0.0, warmup=0, decay_fraction=0.25)
    assert set(wsd[:301]) == {1e-3} and wsd[301] < 1e-3 and wsd[-1] == pytest.approx(1e-3 / 100)
    assert rates(schedule="cosine")[-1] < 1e-6  # the default still decays towards 0


@pytest.mark.parametrize("bad", [dict(final_lr_ratio=1.5), dict(final_lr_ratio=-0.1), dict(decay_fraction=0.0)])
def test_schedule_settings_are_checked(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainSettings(steps=10, lr=1e-3, **bad)


def test_annealing_area_is_the_lagged_drop_of_the_rate():
    s1, s2 = schedule_areas(rates(schedule="linear", final_lr_ratio=0.1, warmup=0), decay=0.0)
    assert s1[0] == 0 and s1[1] == pytest.approx(1.0) and s1[-1] == pytest.approx(400 * 0.55, rel=0.01)
    # Without momentum, the area after s steps is how far the (normalized) rate has dropped.
    assert s2[-1] == pytest.approx(1.0 - 0.1 - 0.9 / 400, rel=1e-6)
    _, lagged = schedule_areas(rates(schedule="linear", final_lr_ratio=0.1, warmup=0), decay=0.9)
    assert lagged[-1] > s2[-1]


# ---------------------------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_recovers_known_parameters_from_the_first_quarter_on_every_schedule(schedule):
    lrs = rates(schedule=schedule, final_lr_ratio=0.1, warmup=20)
    truth = LearningCurve.simulate(lrs, L0=2.5, A=4.0, alpha=0.45, C=0.003, decay=0.99, every=10)
    prior = ForecastPrior(C=0.003, decay=0.99)
    result = forecast(truth.head(100), prior=prior)
    assert result.horizon == 400 and result.fitted_until == 100
    assert result.params["alpha"] == pytest.approx(0.45, rel=0.01)
    assert result.params["L0"] == pytest.approx(2.5, abs=0.02) and result.params["A"] == pytest.approx(4.0, rel=0.02)
    assert result.loss == pytest.approx(truth.losses[-1], abs=1e-3)  # noise-free: only the alpha grid's error
    assert result.low <= result.loss <= result.high


def test_the_annealing_term_is_what_a_schedule_blind_fit_misses():
    lrs = rates(schedule="wsd", final_lr_ratio=0.0, warmup=0, decay_fraction=0.3)
    truth = LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.01, decay=0.9, every=10)
    aware = forecast(truth.head(100), prior=ForecastPrior(C=0.01, decay=0.9))
    blind = forecast(truth.head(100), prior=ForecastPrior(C=0.0, decay=0.9))
    assert abs(aware.loss - truth.losses[-1]) < 0.01 < blind.loss - truth.losses[-1]


def test_prior_fit_recovers_the_shared_annealing_coefficient():
    lrs = rates(steps=600, schedule="cosine", final_lr_ratio=0.1, warmup=30)
    curves = [
        LearningCurve.simulate(lrs, L0=l0, A=a, alpha=alpha, C=0.004, decay=0.9, every=20, noise=0.002, seed=i)
        for i, (l0, a, alpha) in enumerate([(2.0, 3.0, 0.4), (2.5, 5.0, 0.6), (3.0, 2.0, 0.3), (1.5, 4.0, 0.5)])
    ]
    prior = ForecastPrior.fit(curves)
    assert prior.runs == 4 and 0.8 <= prior.decay <= 0.95
    # C and the momentum trade off (a longer lag, a larger area): the annealing gain they give must be right.
    gain = prior.C * schedule_areas(lrs, prior.decay)[1][-1]
    assert gain == pytest.approx(0.004 * schedule_areas(lrs, 0.9)[1][-1], rel=0.15)
    assert prior.scale > 0 and prior.level == 0.8


def test_intervals_hold_the_truth_near_their_nominal_level_on_held_out_synthetic_runs():
    rng = np.random.default_rng(7)

    def runs(count, seed):
        out = []
        for i in range(count):
            lrs = rates(
                steps=int(rng.integers(300, 700)),
                schedule=str(rng.choice(["cosine", "wsd", "linear"])),
                final_lr_ratio=0.1,
                warmup=10,
            )
            out.append(
                LearningCurve.simulate(
                    lrs,
                    L0=rng.uniform(1.5, 3.5),
                    A=rng.uniform(2, 6),
                    alpha=rng.uniform(0.3, 0.7),
                    C=rng.uniform(0.2, 0.4),
                    decay=0.0,
                    every=20,
                    noise=0.01,
                    seed=seed + i,
                )
            )
        return out

    prior = ForecastPrior.fit(runs(16, 0))
    scored = runs(40, 100)
    inside = [forecast(c.head(c.steps[len(c.steps) // 4]), steps=c.steps[-1], prior=prior) for c in scored]
    coverage = np.mean([f.low <= c.losses[-1] <= f.high for f, c in zip(inside, scored)])
    assert 0.6 <= coverage <= 0.97, coverage
    assert np.mean([abs(f.loss - c.losses[-1]) for f, c in zip(inside, scored)]) < 0.1


def shared_exponent_runs(count: int, seed: int) -> list[LearningCurve]:
    """Runs of one exponent (0.5) and various scales, with noise enough that a quarter cannot pin it alone."""
    rng = np.random.default_rng(seed)
    lrs = rates(steps=800, schedule="cosine", final_lr_ratio=0.1, warmup=20)
    return [
        LearningCurve.simulate(
            lrs, L0=rng.uniform(2, 3), A=rng.uniform(3, 6), alpha=0.5, C=0.0, decay=0.9, every=25, noise=0.02,
            seed=seed + i,
        )
        for i in range(count)
    ]  # fmt: skip


def test_an_exponent_prior_from_the_calibration_runs_steadies_noisy_early_fits():
    prior = ForecastPrior.fit(shared_exponent_runs(12, 0))
    assert prior.alpha == pytest.approx(0.5, abs=0.1) and prior.alpha_width is not None  # chosen by leave-one-out
    without = replace(prior, alpha=None, alpha_width=None)
    scored = shared_exponent_runs(30, 100)
    cut = [c.head(200) for c in scored]
    error = [abs(forecast(h, steps=c.steps[-1], prior=prior).loss - c.losses[-1]) for h, c in zip(cut, scored)]
    blind = [abs(forecast(h, steps=c.steps[-1], prior=without).loss - c.losses[-1]) for h, c in zip(cut, scored)]
    assert np.mean(error) < np.mean(blind)  # 0.019 against 0.022 nats when written
    assert forecast(cut[0], prior=prior).params["alpha"] != forecast(cut[0], prior=without).params["alpha"]


def test_an_exponent_prior_needs_both_numbers_and_old_priors_still_read():
    with pytest.raises(ValueError, match="give both or neither"):
        ForecastPrior(C=0.01, alpha=0.5)
    with pytest.raises(ValueError, match="alpha_width=-1"):
        ForecastPrior(C=0.01, alpha=0.5, alpha_width=-1)
    old = {k: v for k, v in ForecastPrior(C=0.01).to_dict().items() if not k.startswith("alpha")}
    assert ForecastPrior.from_dict(old).alpha is None  # written before the exponent prior existed


# ---------------------------------------------------------------------------------------------- horizons


def test_horizon_in_steps_tokens_or_flops():
    lrs = rates(schedule="cosine", final_lr_ratio=0.1)
    curve = LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.001, every=10)
    curve = LearningCurve(curve.steps, curve.losses, curve.lrs, tokens_per_step=256, parameters=1000)
    prior = ForecastPrior(C=0.001, decay=0.99)
    by_tokens = forecast(curve.head(100), tokens=256 * 300, prior=prior)
    by_flops = forecast(curve.head(100), flops=6 * 1000 * 256 * 300, prior=prior)
    assert by_tokens.horizon == by_flops.horizon == 300 and by_tokens.tokens == 256 * 300
    assert by_flops.flops == pytest.approx(6 * 1000 * 256 * 300)
    assert by_tokens.loss == pytest.approx(forecast(curve.head(100), steps=300, prior=prior).loss)
    with pytest.raises(UserError, match="one horizon"):
        forecast(curve, steps=10, tokens=10)


# ---------------------------------------------------------------------------------------------- refusals


def test_refusals_come_before_any_fit_and_say_what_would_do():
    lrs = rates(steps=100)
    curve = LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.0, every=10)
    with pytest.raises(TooFewPointsError, match=f"at least {MIN_POINTS} evaluations") as error:
        forecast(curve.head(30))
    assert isinstance(error.value, UserError) and isinstance(error.value, ValueError)
    with pytest.raises(ScheduleTooShortError, match="stop at step 100"):
        forecast(curve, steps=101)
    with pytest.raises(ScheduleTooShortError, match="learning rates for 50 steps"):
        LearningCurve(curve.steps, curve.losses, lrs[:50])
    with pytest.raises(NonFiniteLossError, match="step 20 is nan"):
        LearningCurve((10, 20, 30), (3.0, math.nan, 2.0), lrs)
    with pytest.raises(NonFiniteLossError, match="inf"):
        LearningCurve((10, 20), (3.0, math.inf), lrs)
    with pytest.raises(UserError, match="increasing"):
        LearningCurve((20, 10), (3.0, 2.0), lrs)
    with pytest.raises(UserError, match="tokens_per_step"):
        forecast(curve, tokens=1000)
    with pytest.raises(UserError, match="parameters"):
        forecast(curve, flops=1e9)


# ---------------------------------------------------------------------------------------------- inputs


def fake_history(settings, evals=(0, 10, 20, 30, 40, 50), tokens_per_step=64):
    config = dict(settings.__dict__, warmup=settings.resolved_warmup, eval_every=10)
    steps = [StepRecord(step=s, seen=s * tokens_per_step, loss=3.0, lr=0.0, time=0.0) for s in range(1, max(evals) + 1)]
    records = [
        EvalRecord(step=s, seen=s * tokens_per_step, loss=2.0 + 3.0 / (1 + s) ** 0.5, accuracy=None, time=0.0)
        for s in evals
    ]
    return History(label="run", config=config, steps=steps, evals=records)


# ------------------------------------------------------------------------------------------ beyond budget


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_stretched_schedule_keeps_its_shape_and_its_end_areas_match_the_loop(schedule):
    short = np.asarray(rates(steps=200, schedule=schedule, final_lr_ratio=0.1))
    longer = stretch_schedule(short, 800)
    assert longer.shape == (800,) and longer.max() == pytest.approx(short.max(), rel=1e-3)
    assert longer[-1] == pytest.approx(short[-1], rel=0.02)  # the same final ratio
    # A quarter of the way through, the same rate: warmup and decay sit at the same fractions of the run.
    assert longer[199] == pytest.approx(short[49], rel=0.05)
    for decay in (0.0, 0.9, 0.99):
        s1, s2 = schedule_areas(longer, decay)
        assert _final_areas(longer, decay) == pytest.approx((s1[-1], s2[-1]))


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_steps_to_reach_finds_the_length_of_a_longer_run_that_ends_at_the_target(schedule):
    prior = ForecastPrior(C=0.002, decay=0.99)
    measured = LearningCurve.simulate(rates(steps=400, schedule=schedule, final_lr_ratio=0.1), 2.0, 3.0, 0.5, 0.002)
    longer = LearningCurve.simulate(rates(steps=1600, schedule=schedule, final_lr_ratio=0.1), 2.0, 3.0, 0.5, 0.002)
    reach = steps_to_reach(measured, longer.losses[-1], prior=prior)
    assert reach.budget == 400 and reach.earliest <= reach.steps <= reach.latest
    assert reach.steps == pytest.approx(1600, rel=0.03)  # the search grid is 1.2% apart
    assert "forecast" in reach.summary() and "x the budget" in reach.summary()
    assert steps_to_reach(measured, measured.losses[-1] + 0.05, prior=prior).steps == 400
    unreachable = steps_to_reach(measured, 1.5, prior=prior, max_factor=10)  # below L0: never
    assert unreachable.steps is None and unreachable.searched_to == 4000
    assert "only beyond 4,000 steps (10x the budget)" in unreachable.summary()


def test_steps_to_reach_widens_with_noise_and_refuses_bad_arguments():
    lrs = rates(steps=400, schedule="cosine")
    noisy = LearningCurve.simulate(lrs, 2.0, 3.0, 0.5, 0.002, noise=0.02, seed=3)
    reach = steps_to_reach(noisy, noisy.losses[-1] - 0.05, prior=ForecastPrior(C=0.002, decay=0.99, scale=1.5))
    assert reach.earliest < reach.latest or reach.latest is None
    for bad in (math.nan, "2.0", True):
        with pytest.raises(UserError, match="target="):
            steps_to_reach(noisy, bad)
    for bad in (1.0, 0.5, math.inf):
        with pytest.raises(UserError, match="max_factor="):
            steps_to_reach(noisy, 2.0, max_factor=bad)
    with pytest.raises(TooFewPointsError):
        steps_to_reach(noisy.head(20), 2.0)
    with pytest.raises(UserError, match="steps=0"):
        stretch_schedule(lrs, 0)


def test_history_curve_reads_its_settings_schedule():
    settings = TrainSettings(steps=200, lr=2e-3, schedule="wsd", final_lr_ratio=0.1, weight_decay=0.0)
    curve = fake_history(settings).curve(parameters=5000)
    assert curve.lrs == tuple(settings.learning_rates()) and curve.total_steps == 200
    assert curve.tokens_per_step == 64 and curve.parameters == 5000 and curve.initial_loss == pytest.approx(5.0)
    assert forecast(fake_history(settings)).horizon == 200


def test_from_csv_reads_a_log_with_an_lr_column_or_a_named_schedule(tmp_path):
    settings = TrainSettings(steps=50, lr=1e-3, schedule="cosine", final_lr_ratio=0.1, weight_decay=0.0)
    history = fake_history(settings)
    for record, lr in zip(history.steps, settings.learning_rates()):
        record.lr = lr
    path = tmp_path / "log.csv"
    history.to_csv(path)
    from_column = LearningCurve.from_csv(path, loss_column="eval_loss", lr_column="lr")
    assert from_column.lrs == pytest.approx(settings.learning_rates())
    assert from_column.steps == (0, 10, 20, 30, 40, 50)
    named = LearningCurve.from_csv(
        path,
        loss_column="eval_loss",
        schedule="cosine",
        total_steps=50,
        warmup=settings.resolved_warmup,
        peak=1e-3,
        final_ratio=0.1,
    )
    assert named.lrs == pytest.approx(from_column.lrs)


def test_from_csv_refuses_bad_logs_naming_the_file(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,loss,lr\n1,3.0,0.001\n3,2.0,0.001\n")
    with pytest.raises(UserError, match="either lr_column"):
        LearningCurve.from_csv(path)
    with pytest.raises(DamagedFileError, match="log.csv.*step\\(s\\) \\[2\\]"):
        LearningCurve.from_csv(path, lr_column="lr")
    with pytest.raises(DamagedFileError, match="no column"):
        LearningCurve.from_csv(path, loss_column="val_loss", lr_column="lr")
    with pytest.raises(UserError, match="not one of"):
        LearningCurve.from_csv(path, schedule="exponential", total_steps=10)
    with pytest.raises(UserError, match="total_steps"):
        LearningCurve.from_csv(path, schedule="cosine")
    with pytest.raises(UserError, match="no such file"):
        LearningCurve.from_csv(tmp_path / "missing.csv", schedule="cosine", total_steps=10)


# ---------------------------------------------------------------------------------------------- records


def test_forecast_and_prior_round_trip_and_damaged_files_name_themselves(tmp_path):
    lrs = rates(schedule="cosine", final_lr_ratio=0.1)
    curve = LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.001, every=10)
    prior = ForecastPrior(C=0.001, decay=0.99, C_spread=0.0002, scale=1.5, runs=3, source="test")
    result = forecast(curve.head(100), prior=prior)
    for record in (result, prior):
        path = record.save(tmp_path / f"{type(record).__name__}.json")
        assert type(record).load(path) == record and load_record(path) == record
    assert "nats at step 400" in result.summary()
    damaged = tmp_path / "damaged.json"
    document = result.to_document()
    for change in (dict(low=result.loss + 1), dict(params={"L0": 1.0}), dict(curve_loss=[1.0]), dict(level=0.5)):
        damaged.write_text(json.dumps({**document, **change}))
        with pytest.raises(DamagedFileError, match="damaged.json"):
            Forecast.load(damaged)
    damaged.write_text(json.dumps({**prior.to_document(), "decay": 1.5}))
    with pytest.raises(DamagedFileError, match="damaged.json.*decay"):
        ForecastPrior.load(damaged)
    damaged.write_text('{"format": "subclone_viz.forecast", "version": 1, "loss": ')
    with pytest.raises(DamagedFileError, match="damaged.json"):
        Forecast.load(damaged)
    with pytest.raises(DamagedFileError, match="missing"):
        damaged.write_text(json.dumps({k: v for k, v in document.items() if k != "horizon"}))
        Forecast.load(damaged)


def test_public_names():
    assert sv.forecast is forecast and sv.LearningCurve is LearningCurve and sv.ForecastPrior is ForecastPrior
    assert sv.steps_to_reach is steps_to_reach


# ---------------------------------------------------------------------------------------------- the CLI


def test_cli_forecasts_a_history_or_a_csv_log_and_refuses_bad_arguments(tmp_path, capsys):
    from subclone_viz.cli import main

    settings = TrainSettings(steps=50, lr=1e-3, schedule="cosine", final_lr_ratio=0.1, weight_decay=0.0)
    history = fake_history(settings)
    saved = history.save(tmp_path / "run.json")
    assert main(["forecast", str(saved), "--json", "--out", str(tmp_path / "f.json")]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["horizon"] == 50 and Forecast.load(tmp_path / "f.json").loss == document["loss"]
    log = tmp_path / "log.csv"
    history.to_csv(log)
    assert (
        main(
            [
                "forecast",
                str(log),
                "--loss-column",
                "eval_loss",
                "--schedule",
                "cosine",
                "--total-steps",
                "100",
                "--final-ratio",
                "0.1",
                "--steps",
                "80",
            ]
        )
        == 0
    )
    assert "at step 80" in capsys.readouterr().out
    for argv, message in (
        (["forecast", str(tmp_path / "nope.csv"), "--lr-column", "lr"], "no such file"),
        (["forecast", str(log)], "--lr-column"),
        (["forecast", str(log), "--schedule", "wsd"], "--total-steps"),
        (["forecast", str(saved), "--schedule", "wsd"], "for .csv logs"),
        (["forecast", str(saved), "--out", str(tmp_path / "f.json")], "--overwrite"),
        (["forecast", str(saved), "--steps", "60"], "stop at step 50"),
        (["forecast", str(saved), "--fit-until", "20"], "at least 4"),
        (["forecast", str(log), "--lr-column", "lr", "--where", "run"], "COLUMN=VALUE"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
