"""Where benchmark figures go: one JSON file per result under ``bench/results/``, each recording the command
that made it, the machine it ran on and when, beside the figures themselves.

Every benchmark writes through :func:`save_results` so that the docs' results page can be generated from the
files alone (``command``, ``machine``, ``date`` and ``headline`` are read there), and so that a rerun replaces
the file atomically (the library's writer) instead of leaving half a file behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from subclone_viz._atomic import write_file

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU count, load, Python, torch and the accelerator if any."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["device"] = "cpu"
    return info


def command_line() -> str:
    """The command as typed, relative to the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def save_results(
    path: str | os.PathLike, figures: dict[str, Any], headline: list[str] | None = None, command: str | None = None
) -> Path:
    """Write ``figures`` to ``path`` (relative paths are under ``bench/results/``) with the command, machine and
    date; ``headline``: the few sentences the results page quotes. Replaces an earlier run's file."""
    path = Path(path)
    if not path.is_absolute():
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": command or command_line(),
        "machine": machine(),
        "date": _dt.date.today().isoformat(),
        "headline": headline or [],
        **figures,
    }
    return write_file(path, json.dumps(document, indent=1, default=str) + "\n", overwrite=True)
