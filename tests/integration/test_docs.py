"""The docs site builds with ``mkdocs build --strict`` (a broken link, a missing page or a figure file without
its provenance fails the build), into a temporary directory, and holds every page of its nav."""

from __future__ import annotations

import doctest
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import execute_notebooks  # noqa: E402

import mkdocs_hooks  # noqa: E402


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def nav_pages(nav: list) -> list[str]:
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_the_site_builds_strictly_with_every_page(tmp_path: Path) -> None:
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    for page in nav_pages(config["nav"]):
        built = tmp_path / "site" / (page.rsplit(".", 1)[0].removesuffix("index")) / "index.html"
        assert built.is_file(), f"{page} was not built"
    results = (tmp_path / "site" / "results" / "index.html").read_text()
    assert "bench_compare_smollm2.py" in results and "speedup_by_size.png" in results
    assert (tmp_path / "site" / "results" / "speedup_study" / "speedup_by_size.png").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "subclone_viz.profile" in api and "DestinationSpec" in api
    assert mkdocs_hooks.ROLE.search(api) is None, "a Sphinx role was left on the API page"


def strict_copy(tmp_path: Path, break_it) -> Path:
    """A copy of the site's sources and configuration (the API page made plain, for speed), changed by
    ``break_it(docs_dir)``."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, symlinks=False)
    (docs / "api.md").write_text("# API reference\n")
    break_it(docs)
    text = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    text = text.replace("  - tools/mkdocs_hooks.py", f"  - {ROOT / 'tools' / 'mkdocs_hooks.py'}")
    config = tmp_path / "mkdocs.yml"
    config.write_text(text)
    return config


@pytest.mark.parametrize(
    "break_it, complaint",
    [
        (
            lambda docs: (docs / "index.md").write_text(
                (docs / "index.md").read_text() + "\n[gone](no_such_page.md)\n"
            ),
            "no_such_page.md",
        ),
        (lambda docs: (docs / "cli.md").unlink(), "cli.md"),
    ],
)
def test_a_broken_link_or_a_missing_page_fails_the_build(tmp_path: Path, break_it, complaint: str) -> None:
    done = build(strict_copy(tmp_path, break_it), tmp_path / "site")
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr


def test_the_hook_example_runs() -> None:
    failed, attempted = doctest.testmod(mkdocs_hooks)
    assert attempted > 0 and failed == 0


def test_executed_notebooks_show_their_plotly_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's page renders its executed copy (tools/execute_notebooks.py) while the copy is current: the
    plotly div with its data, and the site's own plotly.js; a stale copy (another checksum) is not shown."""
    executed = tmp_path / "notebooks"  # mkdocs-jupyter renders files matching notebooks/*.ipynb
    executed.mkdir()
    for name, current in (("01_residual_property.ipynb", True), ("02_neuron_importance.ipynb", False)):
        source = ROOT / "notebooks" / name
        copy = nbformat.read(source, as_version=4)
        cell = next(c for c in copy.cells if c.cell_type == "code")
        figure = go.Figure(go.Bar(y=[3.25, 1.5, 7.75])).to_plotly_json()
        cell.outputs = [nbformat.v4.new_output("display_data", {execute_notebooks.PLOTLY: figure})]
        assert execute_notebooks.inline_plotly(copy) == 1
        checksum = execute_notebooks.source_sha256(source) if current else "0" * 64
        copy.metadata["subclone_viz"] = {execute_notebooks.SOURCE_KEY: checksum}
        nbformat.write(copy, executed / name)
    monkeypatch.setenv("SUBCLONE_VIZ_EXECUTED_NOTEBOOKS", str(executed))
    done = build(strict_copy(tmp_path, lambda docs: None), tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = (tmp_path / "site" / "notebooks" / "01_residual_property" / "index.html").read_text()
    assert 'class="plotly-graph-div"' in shown and "Plotly.newPlot" in shown and '"y":[3.25,1.5,7.75]' in shown
    assert f'src="../../{execute_notebooks.PLOTLY_JS}"' in shown
    assert (tmp_path / "site" / execute_notebooks.PLOTLY_JS).stat().st_size > 1_000_000
    stale = (tmp_path / "site" / "notebooks" / "02_neuron_importance" / "index.html").read_text()
    assert "plotly-graph-div" not in stale


def test_the_notebook_tool_example_runs() -> None:
    failed, attempted = doctest.testmod(execute_notebooks)
    assert attempted > 0 and failed == 0
