"""The notebooks' controls timed in a real browser, from the input event to the finished redraw.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_browser_latency.py [--repeats 5] [--notebooks 01,02,04,06]

Starts JupyterLab (tests/integration/browser/lab.py: a copy of notebooks/, quick mode) and drives it in headless
Chromium with tests/integration/browser/latency.js: each notebook runs top to bottom, then each control below
moves ``--repeats`` times as a person would (an arrow key on a slider's handle, an option picked in a dropdown,
Enter in a text box, a click on a button or a heat-map cell). A time runs from the input event (the page's
clock) to the last change of the notebook's outputs before they stay still for a second (a MutationObserver;
plotly's hover layer ignored), and a change must reach what the control redraws: a plotly figure, or for
predictions through depth's token menu its HTML table. It covers the message to the kernel, the callback, the
messages back and the browser's drawing. ``LATENCY_LOG=1`` prints each move's output mutations, grouped by
millisecond (how many redraws a move caused).

Goals (issue 24): 200 ms for a control that only redraws, 1 s for one that runs the model on a new sentence.
Median and spread (min-max) per control, with the machine's load, go to
``bench/results/widgets/browser_latency.json``. Needs Debian's chromium, node and playwright-core
(``make browser-deps``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import save_results

ROOT = Path(__file__).resolve().parents[1]
BROWSER_DIR = ROOT / "tests" / "integration" / "browser"
sys.path.insert(0, str(BROWSER_DIR))

import lab  # noqa: E402  (tests/integration/browser/lab.py)

REDRAW_MS, MODEL_MS = 200, 1000
SENTENCES = [
    "Weight subcloning starts a small transformer from the weights of a larger pretrained one.",
    "A pre-norm block adds its update to the stream instead of replacing it.",
    "Removing a block from the middle barely changes what the blocks after it see.",
    "Consistent neuron importance lets one ranking choose the channels of every layer.",
    "The learner types a sentence and watches one token drift through thirty blocks.",
    "Massive activations sit in a handful of residual channels of every layer.",
]
# Quick mode's size grid in notebook 4 is 3 blocks x 2 widths: these points of its loss map are four
# different cells, visited in turn.
GRID_CELLS = [[0.25, 0.5], [0.75, 0.5], [0.25, 0.83], [0.75, 0.17]]
RESIDUAL = [
    {"name": "token dropdown", "goal_ms": REDRAW_MS, "select": {"dropdown": "token"}},
    {"name": "layer slider", "goal_ms": REDRAW_MS, "press": {"slider": "residual layer"}},
    {"name": "a new sentence", "goal_ms": MODEL_MS, "fill": {"text": "text", "values": SENTENCES}},
]
RUNS = {
    "01": {"notebook": "01_residual_property.ipynb", "controls": RESIDUAL},
    "02": {
        "notebook": "02_neuron_importance.ipynb",
        "controls": [
            {
                "name": "consistency metric (Spearman / top-k)",
                "goal_ms": REDRAW_MS,
                "toggle": {"buttons": ["top-k overlap", "Spearman"]},
            },
            {"name": "FFN block slider", "goal_ms": REDRAW_MS, "press": {"slider": "block"}},
        ],
    },
    "04": {
        "notebook": "04_choosing_a_size.ipynb",
        "controls": [
            {"name": "budget slider", "goal_ms": REDRAW_MS, "widget": 0, "press": {"slider": "budget (tokens)"}},
            {
                "name": "size-grid cell click (+ linked studio)",
                "goal_ms": REDRAW_MS,
                "widget": 1,
                "click": {"plot": 0, "at": GRID_CELLS},
            },
        ],
    },
    "06": {
        "notebook": "06_what_the_cut_loses.ipynb",
        "controls": [
            {"name": "Explorer: metric menu", "goal_ms": REDRAW_MS, "select": {"dropdown": "metric"}},
            *[{**control, "name": f"Explorer: {control['name']}"} for control in RESIDUAL],
            {
                # The panel's own token menu redraws an HTML table (plots.predictions_through_depth_html), no plot.
                "name": "Explorer: predictions through depth, token menu",
                "goal_ms": REDRAW_MS,
                "select": {"dropdown": "token"},
                "in": ".predictions-through-depth",
                "redraws": ".predictions-through-depth-table",
            },
        ],
    },
}


def drive(url: str, runs: list[dict], artifacts: Path) -> list[dict]:
    """latency.js over ``runs``: one report per notebook, each printed as it comes."""
    command = ["node", str(BROWSER_DIR / "latency.js"), "--url", url, "--artifacts", str(artifacts)]
    # LATENCY_LOG=1: latency.js prints each move's mutations on its stderr, passed through to ours.
    stderr = None if os.environ.get("LATENCY_LOG") else subprocess.PIPE
    with subprocess.Popen(
        [*command, *map(json.dumps, runs)], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=BROWSER_DIR
    ) as node:
        reports = []
        for line in node.stdout:
            if line.startswith("{"):
                reports.append(json.loads(line))
                print(line.strip(), flush=True)
        errors = node.stderr.read() if node.stderr is not None else "(on stderr above)"
    failed = [r for r in reports if not r["ok"]]
    if node.returncode != 0 or failed:
        sys.exit(f"latency.js failed: {failed or errors[-3000:]}")
    return reports


def summarize(reports: list[dict], goals: dict[str, int]) -> list[list]:
    """One row per control: notebook, control, median, min, max, median to the first plot change, goal, verdict."""
    rows = []
    for report in reports:
        for control in report["controls"]:
            ms, goal = control["ms"], goals[control["name"]]
            median, first = statistics.median(ms), statistics.median(control["first_plot_ms"])
            verdict = "meets" if median <= goal else "MISSES"
            rows.append(
                [report["notebook"][:2], control["name"], round(median), min(ms), max(ms), round(first), goal, verdict]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="moves timed per control (default 5)")
    parser.add_argument("--notebooks", default=",".join(RUNS), help=f"which notebooks (default {','.join(RUNS)})")
    args = parser.parse_args()
    missing = lab.missing_tools()
    if missing:
        sys.exit(f"cannot drive a browser: {missing}")
    chosen = args.notebooks.split(",")
    unknown = sorted(set(chosen) - RUNS.keys())
    if unknown:
        sys.exit(f"unknown notebook(s) {unknown}: choose among {sorted(RUNS)}")
    runs = [{**RUNS[n], "repeats": args.repeats} for n in chosen]
    goals = {control["name"]: control["goal_ms"] for run in runs for control in run["controls"]}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder, lab.jupyterlab(Path(folder)) as url:
        reports = drive(url, runs, ROOT / "tests" / "artifacts")
    rows = summarize(reports, goals)
    print(f"{'nb':<4}{'control':<42}{'median':>8}{'min':>6}{'max':>6}{'first':>7}{'goal':>6}  verdict")
    for row in rows:
        print(f"{row[0]:<4}{row[1]:<42}{row[2]:>8}{row[3]:>6}{row[4]:>6}{row[5]:>7}{row[6]:>6}  {row[7]}")
    load = f"load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores"
    headline = [
        f"notebook {r[0]}, {r[1]}: median {r[2]} ms ({r[3]}-{r[4]}; first plot change {r[5]}), goal {r[6]} ms: {r[7]}"
        for r in rows
    ]
    headline.append(
        f"input event to the last output mutation before a second of stillness, headless Chromium on JupyterLab, "
        f"quick mode, {args.repeats} moves per control; {load}"
    )
    figures = {
        "title": "Notebook controls in a real browser: input event to finished redraw",
        "tables": [
            {
                "title": f"Milliseconds per move ({args.repeats} moves per control)",
                "columns": ["notebook", "control", "median", "min", "max", "first plot change", "goal", "verdict"],
                "rows": rows,
            }
        ],
        "raw_ms": {f"{r['notebook']}: {c['name']}": c["ms"] for r in reports for c in r["controls"]},
    }
    print(save_results("widgets/browser_latency.json", figures, headline))


if __name__ == "__main__":
    main()
