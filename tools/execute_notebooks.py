#!/usr/bin/env python3
"""Execute the notebooks in quick mode into a git-ignored folder, so that the docs site shows their figures.

Usage: python tools/execute_notebooks.py [notebooks/01_residual_property.ipynb ...] [--out build/docs/notebooks]
       [--timeout 600]

The notebooks in the repository stay without outputs. This runs each one top to bottom in a headless kernel
(nbclient, ``SUBCLONE_VIZ_QUICK=1``, one thread, in a temporary working directory) with a per-cell time limit,
fails naming the notebook and cell when a cell raises, and writes the executed copy to ``--out`` (by default
``build/docs/notebooks/``, ignored by git) through the atomic writer. Each plotly figure's output becomes an
HTML div, the first preceded by a script tag loading the site's own copy of plotly.js (:data:`PLOTLY_JS`, which
the docs hook adds to the site: no require.js, no CDN, and no 3 MB script inlined into each page, whose strings
the strict build would read as broken links), and the copy records the
SHA-256 of the notebook it came from. The docs hook (tools/mkdocs_hooks.py) renders a copy in place of its
notebook only while that checksum matches the committed notebook, so a stale copy is never shown.
Widgets need a live kernel: the site shows their screenshots (docs/notebooks.md) instead.

Example::

    >>> import nbformat
    >>> notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    >>> notebook.cells[0].outputs = [nbformat.v4.new_output(
    ...     "display_data", {"application/vnd.plotly.v1+json": {"data": [{"type": "bar", "y": [1, 2]}], "layout": {}}})]
    >>> inline_plotly(notebook)
    1
    >>> data = notebook.cells[0].outputs[0].data
    >>> sorted(data), "Plotly.newPlot" in data["text/html"], f'src="../../{PLOTLY_JS}"' in data["text/html"]
    (['text/html', 'text/plain'], True, True)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "build" / "docs" / "notebooks"  # named notebooks/: mkdocs-jupyter renders what matches notebooks/*.ipynb
PLOTLY = "application/vnd.plotly.v1+json"
SOURCE_KEY = "source_sha256"  # in the copy's metadata["subclone_viz"]
PLOTLY_JS = "assets/plotly.min.js"  # on the site; a notebook's page is two folders down (notebooks/NAME/)


def source_sha256(path: Path) -> str:
    """The checksum an executed copy records of the notebook it came from."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inline_plotly(notebook: nbformat.NotebookNode) -> int:
    """Turn every plotly figure output into an HTML div (the first loads the site's plotly.js); returns how many."""
    import plotly.io as pio

    count = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get(PLOTLY)
            if figure is None:
                continue
            script = f"../../{PLOTLY_JS}" if count == 0 else False
            div = pio.to_html(figure, include_plotlyjs=script, full_html=False, validate=False)
            output["data"] = {"text/html": div, "text/plain": "<plotly figure>"}
            count += 1
    return count


def execute(path: Path, out: Path, timeout: int) -> Path:
    """Run ``path`` in quick mode and write its executed copy under ``out``; returns the copy's path."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from subclone_viz._atomic import write_file

    notebook = nbformat.read(path, as_version=4)
    # The kernel inherits these: quick mode, one thread, and plotly figures as their JSON (inlined below).
    os.environ.update({"SUBCLONE_VIZ_QUICK": "1", "OMP_NUM_THREADS": "1", "PLOTLY_RENDERER": "plotly_mimetype"})
    with tempfile.TemporaryDirectory() as work:
        client = NotebookClient(
            notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": work}}
        )
        try:
            client.execute()
        except CellExecutionError as error:
            raise SystemExit(f"{path.name}: a cell failed: {str(error).strip().splitlines()[-1]}") from None
    figures = inline_plotly(notebook)
    notebook.metadata.setdefault("subclone_viz", {})[SOURCE_KEY] = source_sha256(path)
    notebook.metadata.pop("widgets", None)  # widget state without a kernel shows nothing on a static page
    target = out / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file(target, nbformat.writes(notebook).encode(), overwrite=True)
    print(f"{path.name}: {figures} plotly figures -> {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT.relative_to(ROOT)}")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (default 600)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {', '.join(missing)}")
    if args.timeout < 1:
        raise SystemExit(f"--timeout must be at least 1 second, not {args.timeout}")
    if shutil.which("jupyter") is None and not (Path(sys.executable).parent / "jupyter").exists():
        raise SystemExit("jupyter is not installed (pip install -e '.[widgets,docs]')")
    for path in paths:
        execute(path, args.out, args.timeout)


if __name__ == "__main__":
    main()
