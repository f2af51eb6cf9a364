"""Time from Run All to the first figures of notebooks 1 and 2, in full mode with an empty cache.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_first_figure.py

Runs each notebook in a fresh Jupyter kernel (nbclient), with ``SUBCLONE_VIZ_CACHE`` pointing at an empty
directory (a fresh clone: no converted parent, no cached tokens), and records when each cell that shows a
figure finished, counted from the start of the kernel, the kernel's start itself included. The notebooks stop
after those cells (the rest needs the parent). The browser's drawing is not included; the kernel's CPU seconds until then say what an idle core would
take. Goal (issue 24): the first
figure of notebook 1 within 15 s of Run All. Figures go to ``bench/results/widgets/first_figure.json``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from _results import save_results

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
GOAL_SECONDS = 15
# The code cells that draw without the parent (0-based): notebook 1's two figures, notebook 2's explorer.
FIGURE_CELLS = {"01_residual_property": (0, 1), "02_neuron_importance": (1,)}


def first_figures(name: str, drawing: tuple[int, ...]) -> tuple[list[float], float]:
    """Seconds from the kernel's start to the end of each of the notebook's first code cells, up to the last one
    in ``drawing``, which must each show a figure or a widget; and the CPU seconds the kernel spent until then
    (one torch thread: about the wall time on an idle core)."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"][: max(drawing) + 1]
    probe = nbformat.v4.new_code_cell(
        "import resource\nusage = resource.getrusage(resource.RUSAGE_SELF)\nprint(usage.ru_utime + usage.ru_stime)"
    )
    notebook.cells = [*code, probe]
    finished: list[float] = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as work:
        os.environ["SUBCLONE_VIZ_CACHE"] = cache
        start = time.perf_counter()
        client = NotebookClient(
            notebook,
            timeout=600,
            kernel_name="python3",
            resources={"metadata": {"path": work}},
            on_cell_executed=lambda cell, **_: finished.append(time.perf_counter() - start),
        )
        client.execute()
    cpu = float(probe.outputs[0]["text"])
    for index, cell in enumerate(code):
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs
        assert index not in drawing or any(
            "application/vnd.plotly.v1+json" in o.get("data", {})
            or "application/vnd.jupyter.widget-view+json" in o.get("data", {})
            for o in cell.outputs
        ), cell.source
    return [round(t, 1) for t in finished[: len(code)]], round(cpu, 1)


def main() -> None:
    measured = {name: first_figures(name, drawing) for name, drawing in FIGURE_CELLS.items()}
    figures = {name: seconds for name, (seconds, _) in measured.items()}
    cpu = {name: seconds for name, (_, seconds) in measured.items()}
    load = os.getloadavg()[0]
    first = figures["01_residual_property"][0]
    headline = [
        f"Notebook 1's first figure (the shipped profile) {first:.1f} s after Run All, kernel start included, "
        f"with an empty cache ({'within' if first <= GOAL_SECONDS else 'over'} the {GOAL_SECONDS} s goal); "
        f"its second (the shipped block ablation) at {figures['01_residual_property'][1]:.1f} s; notebook 2's "
        f"importance explorer at {figures['02_neuron_importance'][1]:.1f} s. Load average {load:.1f} on "
        f"{os.cpu_count()} cores; the browser's drawing is not included.",
        f"The kernel spent {cpu['01_residual_property']:.1f} CPU seconds up to notebook 1's figures "
        f"({cpu['02_neuron_importance']:.1f} for notebook 2's): about their wall time on an idle core "
        f"({'within' if cpu['01_residual_property'] <= GOAL_SECONDS else 'over'} the goal).",
    ]
    print(
        save_results(
            "widgets/first_figure.json",
            {"seconds_to_figure_cells": figures, "kernel_cpu_seconds": cpu, "goal_seconds": GOAL_SECONDS},
            headline,
        )
    )
    print(headline[0])


if __name__ == "__main__":
    main()
