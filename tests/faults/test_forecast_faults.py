"""Faults around forecasts and the budget chooser: a pilot killed with SIGKILL leaves only whole cache files and
the grid resumes from them; damaged pilot caches are retrained; records into a read-only place and the CLI's
forecast into one fail with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import subclone_viz as sv
from subclone_viz._atomic import DamagedFileError, read_cache_file
from subclone_viz.budget import budget_grid
from subclone_viz.forecast import Forecast, ForecastPrior, LearningCurve, forecast
from faultkit import REPO, assert_one_line_error, leftovers, run_cli_subprocess
from tiny import tiny_batches, tiny_model

ONE_TORCH_THREAD = True
PRIOR = ForecastPrior(C=0.05, decay=0.9, C_spread=0.01, scale=1.5, source="test")

# A budget grid of four cells with pilots long enough to be killed in the middle of one.
GRID_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import subclone_viz as sv
from subclone_viz.forecast import ForecastPrior
from tiny import tiny_batches, tiny_model
parent = sv.load_parent(tiny_model("llama"), device="cpu")
train, heldout = tiny_batches("llama", count=4, pad=False), tiny_batches("llama", count=2, pad=False, seed=5)
prof = sv.profile(parent, train, progress=False)
sv.budget_grid(parent, prof, [2, 4], [24, 48], train, heldout, tokens=24 * {steps}, progress=False,
               prior=ForecastPrior(C=0.05, decay=0.9, C_spread=0.01, scale=1.5, source="test"))
"""


def _pilots(cache: Path) -> list[Path]:
    directory = cache / "budget_pilots"
    return sorted(p for p in directory.iterdir() if p.suffix == ".json") if directory.is_dir() else []


def test_a_pilot_killed_with_sigkill_leaves_whole_files_and_the_grid_resumes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    steps = 1200  # pilots of 300 steps: long enough to kill one in flight
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SUBCLONE_VIZ_CACHE": str(cache)}
    script = GRID_SCRIPT.format(tests=str(REPO / "tests"), steps=steps)
    process = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while not _pilots(cache) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert _pilots(cache), process.stderr.read().decode()[-2000:] if process.poll() is not None else "no pilot"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = _pilots(cache)
    assert leftovers(cache / "budget_pilots") == []
    for path in done:  # every file there is whole
        assert json.loads(read_cache_file(path))["history"]["evals"]
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(cache))
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    train, heldout = tiny_batches("llama", count=4, pad=False), tiny_batches("llama", count=2, pad=False, seed=5)
    grid = budget_grid(
        parent,
        sv.profile(parent, train, progress=False),
        [2, 4],
        [24, 48],
        train,
        heldout,
        tokens=24 * steps,
        progress=False,
        prior=PRIOR,
    )
    assert len(grid.cells) == 4 and grid.cache_hits == len(done) < 4


def test_a_flipped_byte_in_a_pilot_cache_is_retrained(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    train, heldout = tiny_batches("llama", count=4, pad=False), tiny_batches("llama", count=2, pad=False, seed=5)
    prof = sv.profile(parent, train, progress=False)
    first = budget_grid(parent, prof, [2], [24], train, heldout, tokens=24 * 48, progress=False, prior=PRIOR)
    (path,) = _pilots(tmp_path / "cache")
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    again = budget_grid(parent, prof, [2], [24], train, heldout, tokens=24 * 48, progress=False, prior=PRIOR)
    assert again.cache_hits == 0 and again.cells[0]["pilot"] == first.cells[0]["pilot"]
    assert "budget pilot" in caplog.text and path.name in caplog.text


def _forecast() -> Forecast:
    lrs = sv.TrainSettings(steps=200, lr=1e-3, final_lr_ratio=0.1).learning_rates()
    return forecast(
        LearningCurve.simulate(lrs, L0=2.0, A=3.0, alpha=0.5, C=0.05, decay=0.9, every=10).head(60), prior=PRIOR
    )


def test_records_into_a_read_only_place_fail_with_one_error(read_only_dir):
    from subclone_viz.errors import UserError

    for record in (_forecast(), PRIOR):
        with pytest.raises(UserError, match="not writable"):
            record.save(read_only_dir / "x.json")
    assert list(read_only_dir.iterdir()) == []


def test_the_cli_forecast_into_a_read_only_place_and_from_a_damaged_file(tmp_path, read_only_dir):
    history = tmp_path / "run.json"
    history.write_text('{"label": "x", "steps": [')
    code_out_err = run_cli_subprocess("forecast", str(history))
    assert_one_line_error(code_out_err.returncode, code_out_err.stdout, code_out_err.stderr, "run.json")
    log = tmp_path / "log.csv"
    log.write_text("step,loss\n" + "".join(f"{s},{3 + 10 / s}\n" for s in range(10, 110, 10)))
    result = run_cli_subprocess(
        "forecast", str(log), "--schedule", "cosine", "--total-steps", "400", "--out", str(read_only_dir / "f.json")
    )
    assert_one_line_error(result.returncode, result.stdout, result.stderr, "not writable")
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({**PRIOR.to_document(), "scale": "wide"}))
    result = run_cli_subprocess(
        "forecast", str(log), "--schedule", "cosine", "--total-steps", "400", "--prior", str(prior)
    )
    assert_one_line_error(result.returncode, result.stdout, result.stderr, "prior.json", "scale")
    with pytest.raises(DamagedFileError, match="prior.json"):
        ForecastPrior.load(prior)
