"""`subclone-viz --version` prints the package's version, which is the one pyproject.toml declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import subclone_viz
from subclone_viz.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_flag_prints_the_program_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"subclone-viz {subclone_viz.__version__}\n"


def test_the_package_version_is_pyprojects() -> None:
    declared = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert declared is not None, "pyproject.toml has no [project] version line"
    assert subclone_viz.__version__ == declared.group(1)
