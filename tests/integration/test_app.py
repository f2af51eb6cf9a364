"""App mode in a real browser: ``make app``'s Voilà serves notebook 1 as a page with figures, widgets and no code.

Starts Voilà the way ``make app`` does (tools/serve_app.py's command line) on 127.0.0.1, a free port, over a temporary
copy of notebooks/ in quick mode; checks that its front page lists every notebook; then opens notebook 1's page in
headless Chromium with tests/integration/browser/run_app.js (Node + playwright-core, Debian's chromium), which waits
until Voilà has run every cell and reports what the page shows: at least one plotly figure and one widget, no code
input and no error output. Screenshots of the page's top and of its first widget land in
tests/artifacts/app-01_residual_property*.png. The server and its kernels are stopped afterwards, and checked gone.

Skips, saying why, without chromium, node or playwright-core (``make browser-deps`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from serve_app import app_environment, voila_command  # noqa: E402  (tools/ is not a package)

BROWSER_DIR = ROOT / "tests" / "integration" / "browser"
sys.path.insert(0, str(BROWSER_DIR))
import lab  # noqa: E402  (tests/integration/browser/lab.py: the browser tools, shared with test_browser.py)

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = lab.CHROMIUM
NOTEBOOK = "01_residual_property.ipynb"
SERVER_START_SECONDS = 90
PAGE_SECONDS = 840  # Voilà runs the whole notebook before the page shows: 415 s on a loaded 2-core machine
STOP_SECONDS = 20


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (Voilà's kernels), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> list[str]:
    """The notebooks the front page lists (from the contents API it reads), once Voilà answers."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"Voilà exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/voila/api/contents", timeout=2) as response:
                listing = json.load(response)
            return [entry["name"] for entry in listing["content"] if entry["type"] == "notebook"]
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"Voilà did not answer on {url} within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> set[int]:
    """Stop Voilà (it shuts its kernels down on SIGTERM); what is still running of it afterwards."""
    kernels = _descendants(server.pid)
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    deadline = time.monotonic() + STOP_SECONDS
    while _alive(kernels) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _alive(kernels)
    for pid in left:  # never leave them running, but fail the test below
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Voilà over a copy of the notebooks, in quick mode, as ``make app`` starts it: (its URL, the notebooks its
    front page lists)."""
    missing = lab.missing_tools(CHROMIUM)
    if missing:
        pytest.skip(f"real-browser app test skipped: {missing}")
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "subclones"))
    env = {
        **app_environment(os.environ, quick=True),
        "OMP_NUM_THREADS": "1",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),  # connection files out of the home directory
    }
    port = lab.free_port()
    log = tmp_path / "voila.log"
    command = voila_command(notebooks, port, "127.0.0.1", show_tracebacks=True)
    with log.open("w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    stopped = False
    try:
        listed = _wait_for_server(url, server, log)
        yield url, listed
        stopped = True
        left = _stop(server)
        assert not left, f"Voilà left processes {sorted(left)} running after it stopped"
    finally:
        if not stopped:
            _stop(server)


def test_make_app_serves_a_code_free_page_per_notebook(app: tuple[str, list[str]]) -> None:
    url, listed = app
    assert sorted(listed) == sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
    screenshot = ARTIFACTS / f"app-{Path(NOTEBOOK).stem}.png"
    start = time.perf_counter()
    completed = subprocess.run(
        ["node", str(BROWSER_DIR / "run_app.js"), "--url", f"{url}/voila/render/{NOTEBOOK}"]
        + ["--screenshot", str(screenshot), "--chromium", str(CHROMIUM), "--timeout-ms", str(PAGE_SECONDS * 1000)],
        capture_output=True,
        text=True,
        timeout=PAGE_SECONDS + 60,
        cwd=BROWSER_DIR,
    )
    print(f"app page: {time.perf_counter() - start:.1f} s")
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert completed.returncode == 0 and reports, f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    (report,) = reports
    print({key: value for key, value in report.items() if key != "text"})
    assert report["plots"] >= 1, "no plotly figure rendered"
    assert report["widgets"] >= 1, "no widget rendered"
    assert report["code_inputs"] == 0, f"{report['code_inputs']} code inputs are showing"
    assert report["errors"] == [], report["errors"]
    for phrase in ("Traceback", "There was an error", "Error displaying widget"):
        assert phrase not in report["text"], f"the page says {phrase!r}"
    # No line of the notebook's code may appear on the page (the short ones could be words of its text).
    cells = nbformat.read(ROOT / "notebooks" / NOTEBOOK, as_version=4).cells
    code = {line.strip() for c in cells if c.cell_type == "code" for line in c.source.splitlines()}
    shown = sorted(line for line in code if len(line) >= 20 and not line.startswith("#") and line in report["text"])
    assert not shown, f"the page shows code: {shown}"
    for shot in report["screenshot"]:
        assert Path(shot).stat().st_size > 10_000, f"{shot} looks empty"
