#!/usr/bin/env python3
"""Clear outputs, execution counts and saved widget state from notebooks.

Usage: python tools/strip_notebooks.py notebooks/*.ipynb

Files are rewritten only when something changed; prints what it touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

# Cell/notebook metadata that is execution noise, not content.
_CELL_META_DROP = ("execution", "collapsed", "scrolled")
_NB_META_DROP = ("widgets",)


def strip(nb) -> bool:
    changed = False
    for key in _NB_META_DROP:
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    for cell in nb.cells:
        for key in _CELL_META_DROP:
            if key in cell.get("metadata", {}):
                del cell.metadata[key]
                changed = True
        if cell.cell_type == "code":
            if cell.get("outputs"):
                cell.outputs = []
                changed = True
            if cell.get("execution_count") is not None:
                cell.execution_count = None
                changed = True
    return changed


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv if Path(a).suffix == ".ipynb" and Path(a).is_file()]
    if not paths:
        print("strip_notebooks: no notebooks given/found")
        return 0
    for path in paths:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
