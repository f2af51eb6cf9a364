"""tools/serve_app.py (``make app``): the Voilà command line it runs, and the bad arguments it refuses before starting
anything. tests/integration/test_app.py serves a page with it in a real browser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from serve_app import app_environment, voila_command  # noqa: E402  (tools/ is not a package)

SERVE_APP = ROOT / "tools" / "serve_app.py"


def test_the_command_serves_the_folder_with_sources_stripped(tmp_path: Path) -> None:
    command = voila_command(tmp_path, 9123, "0.0.0.0")
    assert command[:4] == [sys.executable, "-m", "voila", str(tmp_path)]
    assert {"--port=9123", "--Voila.ip=0.0.0.0", "--no-browser", "--strip_sources=True"} <= set(command)
    assert "--show_tracebacks=False" in command and "--show_tracebacks=True" in voila_command(tmp_path, 1, "h", True)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--port", "0"], "--port 0 is out of range"), (["--port", "70000"], "--port 70000 is out of range")],
)
def test_a_bad_port_is_refused_naming_it(arguments: list[str], message: str) -> None:
    completed = subprocess.run([sys.executable, str(SERVE_APP), *arguments], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr


def test_a_folder_without_notebooks_is_refused_naming_it(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SERVE_APP), "--notebooks", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 2 and f"--notebooks {tmp_path} holds no .ipynb notebooks" in completed.stderr


def test_app_mode_turns_progress_bars_off_and_quick_mode_on_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from subclone_viz import distributed

    base = {"PATH": "/usr/bin"}
    assert app_environment(base, quick=False) == {"PATH": "/usr/bin", "SUBCLONE_VIZ_PROGRESS": "0"}
    assert app_environment(base, quick=True)["SUBCLONE_VIZ_QUICK"] == "1" and base == {"PATH": "/usr/bin"}
    monkeypatch.delenv("SUBCLONE_VIZ_PROGRESS", raising=False)
    assert distributed.show_progress(True) and not distributed.show_progress(False)
    for name, value in app_environment({}, quick=False).items():
        monkeypatch.setenv(name, value)
    assert not distributed.show_progress(True)
