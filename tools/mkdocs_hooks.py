"""mkdocs hooks (``hooks:`` in mkdocs.yml): the results page and its images join the site at build time, the
notebooks' pages show their executed copies when there are current ones, and the docstrings' Sphinx roles read
as plain code on the API page.

The notebooks are committed without outputs. ``python tools/execute_notebooks.py`` (``make docs`` runs it) writes
executed copies, their plotly figures inlined, to ``build/docs/notebooks/`` (git-ignored); a notebook's page
renders its copy instead of the notebook while the copy's recorded checksum matches the notebook, and the
notebook itself (code and narrative, no outputs) otherwise; plotly.js joins the site once, for every copy. ``SUBCLONE_VIZ_EXECUTED_NOTEBOOKS`` names another
folder of copies.

``results.md`` is generated from ``bench/results/`` by :mod:`results_page` and never written into ``docs/``,
so it cannot go stale; the PNGs that figure files name are served from where they lie, under ``results/``.
A figure file without its command, machine, date or headline fails the build with the file's name.

The docstrings are written for ``help()`` and Sphinx (``:func:`name```, ``~`` to shorten a path,
``Example::``); mkdocstrings renders them as Markdown, so :func:`on_page_content` drops the role names and the
second colon, leaving the code.

Example::

    >>> from mkdocs.config import load_config
    >>> config = load_config(str(results_page.ROOT / "mkdocs.yml"))
    >>> files = config.plugins.on_files(Files([]), config=config)   # every plugin's on_files, this hook's too
    >>> files.get_file_from_path("results.md").content_string.splitlines()[0]
    '# Results'
    >>> files.get_file_from_path("results/speedup_study/speedup_by_size.png") is not None
    True
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

sys.path.insert(0, str(Path(__file__).resolve().parent))

import execute_notebooks  # noqa: E402  (sibling scripts, importable once their folder is on the path)

import results_page  # noqa: E402


def on_files(files: Files, config: MkDocsConfig) -> Files:
    try:
        entries = results_page.collect(results_page.RESULTS)
    except results_page.ResultsFileError as error:
        raise PluginError(f"results page: {error}") from error
    files.append(File.generated(config, "results.md", content=results_page.render(entries, "results/")))
    for entry in entries:
        for image in entry.images:
            src_uri = f"results/{(entry.path.parent / image.name).as_posix()}"
            files.append(File.generated(config, src_uri, abs_src_path=str(image)))
    if executed_notebooks(files):
        from plotly.offline import get_plotlyjs

        files.append(File.generated(config, execute_notebooks.PLOTLY_JS, content=get_plotlyjs()))
    return files


def executed_notebooks(files: Files) -> list[str]:
    """Point each notebook page whose executed copy is current at that copy; returns the notebooks it did."""
    folder = Path(os.environ.get("SUBCLONE_VIZ_EXECUTED_NOTEBOOKS", execute_notebooks.OUT))
    shown = []
    for file in files:
        if not (file.src_uri.startswith("notebooks/") and file.src_uri.endswith(".ipynb")):
            continue
        source = getattr(file, "file", file)  # mkdocs-jupyter wraps the File of each notebook it renders
        copy = folder / Path(file.src_uri).name
        if copy.is_file() and _current(copy, Path(source.abs_src_path)):
            # Both: the wrapper's own attribute is what mkdocs-jupyter reads, the File's what mkdocs copies.
            source.abs_src_path = file.abs_src_path = str(copy)
            shown.append(file.src_uri)
    return shown


def _current(copy: Path, notebook: Path) -> bool:
    try:
        recorded = json.loads(copy.read_text())["metadata"]["subclone_viz"][execute_notebooks.SOURCE_KEY]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PluginError(
            f"executed notebook {copy} is damaged ({error}): run tools/execute_notebooks.py again"
        ) from error
    return recorded == execute_notebooks.source_sha256(notebook)


# ":func:<code>~a.b</code>" as mkdocstrings renders a Sphinx role; the "~" shortens the path to its last part
ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def unrole(match: re.Match[str]) -> str:
    name = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
    return f"<code>{name}</code>"


def on_page_content(html: str, page: Page, **_: object) -> str:
    """Sphinx roles as plain code, and ``Example::`` as a heading word (the API page only)."""
    if page.file.src_uri != "api.md":
        return html
    return ROLE.sub(unrole, html).replace("Example::", "Example:")
