"""Every module's docstring example runs: they are the first code a newcomer copies.

A module docstring introduces its example with ``Example::``; the block under it must hold doctest lines
(``>>>``), and every doctest of the module (module, class and function docstrings) must pass. Outputs that vary
(losses, timings) are matched with ELLIPSIS; examples run in a temporary directory, so files they write vanish.
Examples that load the embedded SmolLM2 or train the digits ViT are marked slow (they share one converted
parent per test session, as the integration tests do).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re

import pytest

import subclone_viz

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(subclone_viz.__path__, "subclone_viz.")
    if info.name != "subclone_viz.__main__"
)
MODULES.insert(0, "subclone_viz")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# The literal block under "Example::": the indented lines after it, up to the next unindented line.
EXAMPLE = re.compile(r"Example::\n\s*\n((?:[ \t]+\S.*\n|[ \t]*\n)+)")


def _slow(name: str) -> bool:
    """Examples that load an embedded parent (SmolLM2 converted from GGUF, the digits ViT trained here)."""
    doc = importlib.import_module(name).__doc__ or ""
    return "smollm2-135m" in doc or "vit_digits_parent" in doc


PARAMS = [pytest.param(name, marks=pytest.mark.slow) if _slow(name) else name for name in MODULES]


def test_every_module_is_found():
    assert {"subclone_viz", "subclone_viz.workflow", "subclone_viz.families.llama"} <= set(MODULES)


@pytest.mark.parametrize("name", PARAMS)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    module = importlib.import_module(name)
    doc = module.__doc__ or ""
    for block in EXAMPLE.findall(doc):
        assert ">>>" in block, f"{name}: its Example:: block is not a doctest (no >>> lines), so it never runs"
    monkeypatch.chdir(tmp_path)
    tests = [test for test in doctest.DocTestFinder(exclude_empty=True).find(module, name) if test.examples]
    if "Example::" in doc:
        assert tests, f"{name}: an Example:: but no doctest found"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{name}: {results.failed} of {results.attempted} doctest lines failed (output above)"
