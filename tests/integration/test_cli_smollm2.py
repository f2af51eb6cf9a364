"""The ``subclone-viz`` command line on the embedded SmolLM2-135M, run as a real subprocess.

``python -m subclone_viz`` is what the ``subclone-viz`` console script runs. Each test loads the real parent
(the first load in a session converts its GGUF file, about half a minute), so they are marked slow.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from subclone_viz.parent import load_parent

pytestmark = pytest.mark.slow

README_SUBCLONE = [
    "subclone",
    "--parent",
    "smollm2-135m",
    "--layers",
    "20",
    "--hidden",
    "384",
    "--ffn",
    "1024",
    "--heads",
    "6",
    "--kv-heads",
    "2",
    "--depth",
    "middle",
    "--width",
    "importance",
    "--scaling",
    "sqrt",
]


def subclone_viz(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "subclone_viz", *argv], cwd=cwd, capture_output=True, text=True, timeout=1800
    )


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[dict, Path]:
    """``subclone-viz profile --json`` on 4,096 tokens of the embedded corpus, saved for the subclone test."""
    directory = tmp_path_factory.mktemp("cli-smollm2")
    result = subclone_viz(
        "profile",
        "--parent",
        "smollm2-135m",
        "--data",
        "builtin",
        "--tokens",
        "4096",
        "--out",
        "profile.npz",
        "--json",
        cwd=directory,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), directory / "profile.npz"


def test_profile_json_shows_the_additive_residual_property(profiled):
    document, path = profiled
    assert document["parent"] == "smollm2-135m"
    assert document["tokens"] == 4096
    assert document["output"] == "profile.npz" and path.is_file()
    f_over_sum = np.array(document["blocks"]["f_over_sum"])
    assert f_over_sum.shape == (30,)
    # The first block rewrites the embedding; the middle blocks change the hidden state far less.
    assert f_over_sum[0] > 2 * np.median(f_over_sum[5:25])
    # One channel ranking serves every layer: adjacent residual layers agree closely.
    assert document["median_adjacent_spearman"] > 0.8


def test_readme_subclone_command_saves_a_scored_destination(profiled, tmp_path):
    _, profile_path = profiled
    out_dir = tmp_path / "smollm2-20x384"
    result = subclone_viz(*README_SUBCLONE, "--profile", str(profile_path), "--out", str(out_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plan: 20 layers (parent blocks [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, " in result.stdout
    losses = re.search(r"held-out loss before training: ([\d.]+) \(parent ([\d.]+)\)", result.stdout)
    assert losses, result.stdout
    destination_loss, parent_loss = map(float, losses.groups())
    # Untrained, the subclone is worse than its parent but well below a random model's ln(vocabulary).
    assert parent_loss < destination_loss < math.log(49152) - 0.5
    child = load_parent(out_dir)
    assert child.dims.to_dict() == {"layers": 20, "hidden": 384, "ffn": 1024, "heads": 6, "kv_heads": 2, "head_dim": 64}
    assert json.loads((out_dir / "subclone.json").read_text())["profile"]["tokens"] == 4096


def test_invalid_spec_on_the_real_parent_writes_nothing(tmp_path):
    out_dir = tmp_path / "too-wide"
    result = subclone_viz(
        "subclone", "--parent", "smollm2-135m", "--layers", "20", "--hidden", "600", "--out", str(out_dir), cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "subclone-viz: error: hidden=600 is out of range: choose 1 <= hidden <= 576 (the parent's)"
    ]
    assert not out_dir.exists()
