"""The notebooks in a real browser: JupyterLab, driven in headless Chromium, renders and runs the widgets.

Starts JupyterLab on 127.0.0.1 (a free port, no token) over a temporary copy of notebooks/, in quick mode, and
runs tests/integration/browser/run_notebooks.js (Node + playwright-core, with Debian's chromium): it opens each
notebook, runs all cells, checks that plotly figures rendered, clicks the Subclone and Train buttons of notebook
3 and a size-grid cell of notebook 4, moves notebook 6's layer slider, and waits for their results, and saves a
screenshot of each notebook's widget to tests/artifacts/ and docs/screenshots/ (the docs' Notebooks page), and
one of every figure and widget output to tests/artifacts/figures/NOTEBOOK/ (git-ignored, for review). Notebook 5's studio, with every block kept, must draw no grey "removed" band
(counted in the DOM), also after its blocks slider goes down and back up with the keyboard.

Skips, saying why, without chromium, node or playwright-core (``make browser-deps`` installs them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "integration" / "browser"
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
sys.path.insert(0, str(BROWSER_DIR))

import lab  # noqa: E402  (tests/integration/browser/lab.py: the server, shared with bench_browser_latency.py)

CHROMIUM = lab.CHROMIUM
# What run_notebooks.js does with each notebook: run all cells, then click and wait for each result in turn.
RUNS = [
    {"notebook": "01_residual_property.ipynb"},
    {"notebook": "02_neuron_importance.ipynb"},
    {
        "notebook": "03_subclone_and_train.ipynb",
        "actions": [
            {"click": {"button": "Subclone"}, "expect": ".subclone-result"},
            # Training runs in a kernel thread; the curves and this status update while the kernel is idle.
            {"click": {"button": "Train"}, "expect": ".train-status", "text": "training done"},
        ],
    },
    # Notebook 4's second widget is the size-grid explorer (the first is the budget chooser). A click at a quarter
    # of the width and half the height of its loss map: in quick mode's 3 x 2 grid, the middle row's left cell
    # (15 blocks x 192).
    {
        "notebook": "04_choosing_a_size.ipynb",
        "widget": 1,
        "actions": [{"click": {"plot": 0, "at": [0.25, 0.5]}, "expect": ".size-grid-selection"}],
    },
    # Notebook 6's explorer opens on its residual tab, the token trace at residual layer 15 of SmolLM2's 30: one
    # arrow key on the layer slider moves the marker and the readout to layer 16 (a round trip to the kernel).
    {
        "notebook": "06_what_the_cut_loses.ipynb",
        "actions": [
            {
                "press": {"slider": "residual layer", "keys": ["ArrowRight"]},
                "expect": ".widget-html",
                "text": "residual layer 16:",
            }
        ],
    },
]
# Notebook 5 shows the studio (its second widget) with all 6 blocks kept: its residual plot (plot 0) must draw no
# band in the removed blocks' grey, then one band at 4 blocks, then none again at 6.
REMOVED_BANDS = {"plot": 0, "fill": "rgb(184, 184, 184)"}  # plots.REMOVED_COLOR, #b8b8b8
VISION_RUN = {
    "notebook": "05_vision.ipynb",
    "widget": 1,
    "actions": [
        {"shapes": {**REMOVED_BANDS, "count": 0}},
        {"press": {"slider": "blocks", "keys": ["ArrowLeft", "ArrowLeft"]}, "shapes": {**REMOVED_BANDS, "count": 1}},
        {"press": {"slider": "blocks", "keys": ["ArrowRight", "ArrowRight"]}, "shapes": {**REMOVED_BANDS, "count": 0}},
    ],
}
RUN_SECONDS = 1500  # six notebooks, two of them training, on a shared 2-core machine


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory):
    """A JupyterLab server over a copy of the notebooks, in quick mode; yields its URL."""
    missing = lab.missing_tools(CHROMIUM)
    if missing:
        pytest.skip(f"real-browser test skipped: {missing}")
    try:
        with lab.jupyterlab(tmp_path_factory.mktemp("jupyterlab")) as url:
            yield url
    except lab.LabError as error:
        pytest.fail(str(error))


def _run_in_chromium(url: str, runs: list[dict]) -> list[dict]:
    """run_notebooks.js over ``runs``; its reports, one per notebook, after checking that every one rendered."""
    start = time.perf_counter()
    completed = subprocess.run(
        [
            "node",
            str(BROWSER_DIR / "run_notebooks.js"),
            "--url",
            url,
            "--artifacts",
            str(ARTIFACTS),
            "--screenshots",
            str(SCREENSHOTS),
            "--chromium",
            str(CHROMIUM),
            *map(json.dumps, runs),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        cwd=BROWSER_DIR,
    )
    print(f"browser run: {time.perf_counter() - start:.1f} s")
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    for report in reports:
        print(report)
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr[-3000:]}"
    assert [r["notebook"] for r in reports] == [run["notebook"] for run in runs]
    for report in reports:
        assert report["plots"] >= 1, f"{report['notebook']}: no plotly figure rendered"
        for screenshot in report["screenshot"]:
            assert Path(screenshot).stat().st_size > 10_000, f"{screenshot} looks empty"
    return reports


def test_notebooks_render_and_run_in_chromium(jupyterlab: str) -> None:
    reports = _run_in_chromium(jupyterlab, RUNS)
    (subcloned, trained), (selected,) = reports[2]["results"], reports[3]["results"]
    assert "parameters" in subcloned and "held-out loss before training" in subcloned and "saved to" in subcloned
    assert trained.startswith("training done: "), trained  # then each run: "random: done, 8 steps in 0:26 | ..."
    assert "15 blocks x 192 wide" in selected and "sent to the subclone studio" in selected
    (moved,) = reports[4]["results"]
    assert moved.startswith("residual layer 16: ||h|| = ") and "block 15: cos(input, output) = " in moved, moved
    # Every figure of every notebook, one screenshot each, for review (git-ignored under tests/artifacts/figures/).
    for report in reports:
        shots = [Path(f) for f in report["figures"]]
        assert len([f for f in shots if f.name.startswith("figure-")]) >= 1, report["notebook"]
        assert all(f.parent == ARTIFACTS / "figures" / Path(report["notebook"]).stem for f in shots)
        assert all(f.stat().st_size > 2_000 for f in shots), [(f.name, f.stat().st_size) for f in shots]


def test_vision_studio_draws_no_removed_band_with_every_block_kept(jupyterlab: str) -> None:
    (report,) = _run_in_chromium(jupyterlab, [VISION_RUN])
    filled = REMOVED_BANDS["fill"]
    assert report["results"] == [f"0 shapes filled {filled}", f"1 shapes filled {filled}", f"0 shapes filled {filled}"]
