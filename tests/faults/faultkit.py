"""Helpers of the fault-injection suite: CLI argument lists for tiny parents, a CLI run in a subprocess (to be
killed), the one-line-error checks and the writer's leftovers. Fixtures are in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def text_args(parents: dict[str, Path]) -> list[str]:
    return ["--parent", str(parents["llama"]), "--data", str(parents["corpus"]), "--seq-len", "16", "--batch-size", "2"]


def subclone_args(parents: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """A subclone that needs no profile and no scoring: seconds."""
    return [
        "subclone",
        *text_args(parents),
        "--layers",
        "2",
        "--hidden",
        "24",
        "--heads",
        "3",
        "--kv-heads",
        "1",
        "--width",
        "uniform",
        "--eval-tokens",
        "0",
        "--out",
        str(out),
        *extra,
    ]


def compare_args(parents: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        *text_args(parents),
        "--layers",
        "2",
        "--hidden",
        "24",
        "--heads",
        "3",
        "--kv-heads",
        "1",
        "--inits",
        "random",
        "--steps",
        "2",
        "--eval-tokens",
        "32",
        "--out",
        str(out),
        *extra,
    ]


def study_args(parents: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """A speedup study of one size, one learning rate per init, two steps: seconds."""
    return [
        "study",
        *text_args(parents),
        "--sizes",
        "2x24",
        "--random-lrs",
        "1e-3",
        "--subclone-lrs",
        "1e-3",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--eval-tokens",
        "32",
        "--out",
        str(out),
        *extra,
    ]


def run_cli_subprocess(
    *argv: str, fault: str | None = None, target: str = "", cache: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """``python -m subclone_viz ARGV`` in a fresh process running this checkout, optionally with an injected fault
    (``SUBCLONE_VIZ_FAULT``, see subclone_viz/_atomic.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SUBCLONE_VIZ_FAULT", None)
    env.pop("SUBCLONE_VIZ_FAULT_TARGET", None)
    if fault is not None:
        env["SUBCLONE_VIZ_FAULT"] = fault
    if target:
        env["SUBCLONE_VIZ_FAULT_TARGET"] = target
    if cache is not None:
        env["SUBCLONE_VIZ_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "subclone_viz", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, and exactly one line on stderr holding every fragment."""
    assert code == 2, (code, err)
    assert out == ""
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_late_error(code: int, out: str, err: str, *fragments: str) -> str:
    """An error after work began (progress bars may precede it): exit status 2, no traceback, the error as the
    last line of stderr holding every fragment."""
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error:" in last
    for fragment in fragments:
        assert fragment in last, last
    return last


def leftovers(directory: Path) -> list[str]:
    """Staging or set-aside entries of the atomic writer (anything half-written) in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def dead_pid() -> int:
    """The id of a process that has exited (not reused this soon on Linux's incrementing PIDs)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
