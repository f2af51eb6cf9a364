#!/usr/bin/env python3
"""App mode: serve the explorer notebooks with Voilà, code hidden, a page per notebook (``make app``).

Voilà runs each notebook top to bottom in its own kernel when a page is opened, then shows only the markdown, the
figures and the live widgets. The front page lists the notebooks; each one is at
``http://HOST:PORT/voila/render/<notebook>.ipynb``. Progress bars are off (``SUBCLONE_VIZ_PROGRESS=0``); ``--quick``
sets ``SUBCLONE_VIZ_QUICK=1`` for the kernels (the notebooks' bounded mode: pages ready sooner, with smaller
measurements).

Usage: python tools/serve_app.py [--port 8866] [--host 127.0.0.1] [--quick] [--show-tracebacks] [--notebooks DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 8866  # Voilà's own default


def voila_command(notebooks: Path, port: int, host: str, show_tracebacks: bool = False) -> list[str]:
    """The Voilà command line that serves ``notebooks`` (a folder) on ``host:port``, sources stripped."""
    return [
        sys.executable,
        "-m",
        "voila",
        str(notebooks),
        f"--port={port}",
        f"--Voila.ip={host}",
        "--no-browser",
        "--strip_sources=True",
        f"--show_tracebacks={show_tracebacks}",
    ]


def app_environment(environment: Mapping[str, str], quick: bool) -> dict[str, str]:
    """``environment`` for Voilà and its kernels: no progress bars (a page shows its cells once they have all run,
    when a closed bar would be a dead widget), and with ``quick`` the notebooks' bounded mode."""
    return {**environment, "SUBCLONE_VIZ_PROGRESS": "0", **({"SUBCLONE_VIZ_QUICK": "1"} if quick else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the port to serve on (default 8866)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--quick", action="store_true", help="the notebooks' bounded mode (SUBCLONE_VIZ_QUICK=1)")
    parser.add_argument("--show-tracebacks", action="store_true", help="show a failed cell's traceback on its page")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help="the folder of notebooks")
    args = parser.parse_args()
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is out of range; give a port from 1 to 65535")
    if not sorted(args.notebooks.glob("*.ipynb")):
        parser.error(f"--notebooks {args.notebooks} holds no .ipynb notebooks")
    command = voila_command(args.notebooks, args.port, args.host, args.show_tracebacks)
    print(f"serving {args.notebooks} on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    os.execve(command[0], command, app_environment(os.environ, args.quick))


if __name__ == "__main__":
    main()
