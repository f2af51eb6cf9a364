"""Every notebook runs top to bottom in a headless kernel (nbclient) in quick mode, on the embedded parents.

Each notebook runs in a temporary directory (what it saves lands there), with ``SUBCLONE_VIZ_QUICK=1``. After its
own cells, a probe cell drives its widgets the way a reader would (a Subclone click, a cell selection) and checks the
kernel-side state, since widget output needs a front end to show.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

# Run after a notebook's own cells, in its kernel: an AssertionError fails the test.
PROBES = {
    "01_residual_property": """
assert figures.profile.tokens == 8192 and len(figures.profile.block_metrics["f_over_sum"]) == 30  # shipped
assert len(ablation.removed) == 30 and ablation.removed[0] > ablation.baseline + 1  # block 0 matters
assert prof.tokens >= 256 and len(mine.removed) == 30  # measured again in quick mode
""",
    "02_neuron_importance": """
assert prof.rank_consistency().spearman.shape == (31, 31) and prof is figures.profile
assert mine.tokens >= 256 and mine.rank_consistency().spearman.shape == (31, 31)
""",
    "03_subclone_and_train": """
studio.layers.value = 6
studio.subclone_button.click()
assert studio.last_error is None, studio.last_error
assert studio.plan.layers == [0, 1, 2, 27, 28, 29]
assert studio.last_result.path.is_dir() and studio.last_result.loss > 0
assert studio.last_result.params == sum(p.numel() for p in studio.last_result.model.parameters())
""",
    "04_choosing_a_size": """
spec = sizes.select(0, 1)
assert (studio.layers.value, studio.hidden.value) == (spec.layers, spec.hidden) == (grid.layers[0], grid.hidden[1])
assert sizes.selected == (0, 1)
assert figure is not None and [size["label"] for size in study.sizes] == ["20 x 384", "8 x 288"]
""",
    "06_what_the_cut_loses": """
depth_plan = cuts["depth cut"][0]
front = next(j for j, block in enumerate(depth_plan.layers) if block != j)  # destination layers before the gap
assert abs(similarities["depth cut"].cka[:front + 1] - 1).max() < 1e-3
assert abs(lenses["depth cut"].loss[:front + 1] - lenses["parent"].loss[:front + 1]).max() < 1e-3
assert similarities["width cut"].cka[0] < 0.999
assert list(outputs.texts) == ["parent", "width cut", "both, trained"] and history.last_step == 2
assert explorer.residual.depth is not None and explorer.studio.views.outputs is not None
""",
    "05_vision": """
assert parent.family.task == "image-classification" and list(result.histories) == ["random", "subclone"]
assert studio.plan.destination_dims.hidden == 64 and "eval_accuracy" in studio.curve_figures
""",
}


def test_notebooks_are_committed_without_outputs() -> None:
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        dirty = [
            i
            for i, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
        ]
        assert not dirty, f"{path.name}: cells {dirty} have outputs; run `make strip-notebooks`"
        assert "widgets" not in notebook.metadata, f"{path.name} holds saved widget state; run `make strip-notebooks`"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless_in_quick_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBCLONE_VIZ_QUICK", "1")
    # One thread per kernel: on a small shared machine two threads mostly wait for each other.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(new_code_cell(PROBES[path.stem]))
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    print(f"{path.name}: {time.perf_counter() - start:.1f} s in quick mode")
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
