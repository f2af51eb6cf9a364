"""A JupyterLab server for the real-browser runs: the browser test and ``bench/bench_browser_latency.py``.

:func:`jupyterlab` copies ``notebooks/`` into a temporary folder, starts JupyterLab there on 127.0.0.1 (a free
port, no token, quick mode, one thread per kernel, its settings and runtime files kept in the folder), waits for
it to answer and yields its URL; on exit it stops the server and the kernels it started. :func:`missing_tools`
says what the Node side lacks (Debian's chromium, node, playwright-core), or None.

Example::

    >>> missing_tools(Path("/no/such/chromium")).startswith("/no/such/chromium is missing")
    True
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BROWSER_DIR = ROOT / "tests" / "integration" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_SECONDS = 90


class LabError(RuntimeError):
    """JupyterLab exited or did not answer; the message ends with its log's tail."""


def missing_tools(chromium: Path = CHROMIUM) -> str | None:
    """What the browser runs lack, in words, or None when chromium, node and playwright-core are there."""
    if not chromium.exists():
        return f"{chromium} is missing (Debian's chromium: `make browser-deps` or apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        return f"playwright-core is not installed in {BROWSER_DIR} (`make browser-deps` or npm install there)"
    return None


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LabError(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise LabError(f"JupyterLab did not answer on {url} within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


def _environment(folder: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "SUBCLONE_VIZ_QUICK": "1",
        # One thread per kernel: on a small shared machine two threads mostly wait for each other.
        "OMP_NUM_THREADS": "1",
        # Keep JupyterLab's settings, workspaces and runtime files out of the home directory.
        "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(folder / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
    }
    # No news or update checks: they would try the network and cover the page with a notification.
    notification = folder / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return env


@contextmanager
def jupyterlab(folder: Path) -> Iterator[str]:
    """JupyterLab over a copy of ``notebooks/`` made in ``folder`` (an empty temporary folder), in quick mode;
    yields its URL. Raises :class:`LabError` when it does not start."""
    notebooks = folder / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "subclones"))
    env = _environment(folder)
    port = free_port()
    log = folder / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--port={port}",
        "--ip=127.0.0.1",
        "--no-browser",
        "--allow-root",
        "--ServerApp.token=",
        "--ServerApp.password=",
        "--LabApp.expose_app_in_browser=True",
        f"--ServerApp.root_dir={notebooks}",
    ]
    with log.open("w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, server, log)
        yield url
    finally:
        # The server and the kernels it started share its session: stop them all.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
