"""The GPU check's CPU dry run: every stage of bench/gpu_check.py runs on tiny models, so the script that a lent
GPU runs in one go cannot rot between GPU sessions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# The dry run's work is tiny; its time is process starts (the load stage's imports, three accelerate launches),
# which a busy machine stretches several-fold (735 s seen at a load average of 12 on 2 cores). The script skips
# the stages it has not started by its budget, and the tests need every stage: the budget only guards a hang.
DRY_RUN_BUDGET_S = 1500


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check") / "dry.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [
            sys.executable,
            "bench/gpu_check.py",
            "--cpu-dry-run",
            "--budget-s",
            str(DRY_RUN_BUDGET_S),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRY_RUN_BUDGET_S + 300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_stage_runs_on_the_cpu(dry_run):
    stages = dry_run["parents"]["tiny-llama"]
    assert {name: stage["status"] for name, stage in stages.items()} == {
        name: "ok" for name in ("load", "profile", "subclone", "train", "fsdp", "widgets", "device_map")
    }


@pytest.mark.slow
def test_the_checks_inside_the_stages_hold(dry_run):
    stages = dry_run["parents"]["tiny-llama"]
    assert stages["subclone"]["agrees"] and stages["subclone"]["worst_bf16_ulps"] <= 2.0
    assert stages["fsdp"]["runs"]["first"]["stopped_early"]
    assert stages["fsdp"]["resumed_equals_whole"], stages["fsdp"]
    assert stages["device_map"]["agrees"] and stages["device_map"]["blocks_on_cpu"] == 2
    assert stages["train"]["random"]["tokens_per_s"] > 0
    assert stages["profile"]["profile_over_forward_without_head"] > 0


@pytest.mark.slow
def test_the_figures_record_their_command_and_machine(dry_run):
    assert "gpu_check.py --cpu-dry-run" in dry_run["command"]
    assert dry_run["machine"]["cpus"] >= 1 and dry_run["environment"]["dry_run"] is True
    assert dry_run["headline"] and "tiny-llama" in dry_run["headline"][0]


def test_bad_parents_are_refused_before_any_work():
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--parents", "smollm3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 2
    assert "--parents smollm3: choose from smollm2-135m, gemma3-270m" in done.stderr
