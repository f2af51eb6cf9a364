"""A ratchet on type errors: mypy runs on the package with the configuration committed in pyproject.toml
([tool.mypy]); the modules listed there as strict must stay clean, and the count of the remaining errors
may go down but never up.

When a change removes errors, lower ``MYPY_ERRORS`` to the new count in the same commit, so that the
ratchet holds the gain.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Measured with the pinned mypy (the test extra) on `python -m mypy` at the repository root.
MYPY_ERRORS = 152


def run_mypy() -> tuple[int, str]:
    """The error count of ``python -m mypy`` at the repository root, and its output."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    if done.returncode == 0:
        return 0, output
    found = re.search(r"^Found (\d+) errors? in \d+ files?", output, re.MULTILINE)
    if found is None:  # mypy itself failed (a configuration error, a crash): show why
        raise AssertionError(f"mypy exited {done.returncode} without an error count:\n{output[-3000:]}")
    return int(found.group(1)), output


def test_mypy_errors_do_not_go_up() -> None:
    count, output = run_mypy()
    assert count <= MYPY_ERRORS, (
        f"mypy found {count} errors, more than the {MYPY_ERRORS} recorded; fix the new ones:\n{output[-6000:]}"
    )
