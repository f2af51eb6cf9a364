"""Shipped figures: written and read back through the validating loaders, every kind of damage caught and named.

A tiny Llama stands in for an embedded parent (tools/make_shipped.py does the same for SmolLM2); the test of the
package's own shipped data reads what is committed, without loading any parent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import subclone_viz as sv
from subclone_viz import shipped
from subclone_viz._atomic import DamagedFileError
from subclone_viz.errors import UnknownNameError
from tiny import tiny_batches, tiny_model

MADE = {"command": "python tools/make_shipped.py tiny", "profile": "2 tiny batches", "ablation": "2 tiny batches"}


@pytest.fixture(scope="module")
def tiny():
    parent = sv.load_parent(tiny_model("llama"))
    batches = tiny_batches("llama", count=2, pad=False)
    return parent, sv.profile(parent, batches, progress=False), sv.block_ablation(parent, batches, progress=False)


@pytest.fixture
def saved(tiny, tmp_path: Path) -> Path:
    parent, prof, ablation = tiny
    shipped.save_shipped(parent, prof, ablation, MADE, directory=tmp_path)
    return tmp_path


def test_shipped_figures_read_back_as_they_were_measured(tiny, saved: Path) -> None:
    parent, prof, ablation = tiny
    figures = shipped.load_shipped(parent.name, saved)
    np.testing.assert_allclose(figures.profile.residual_importance, prof.residual_importance)
    assert figures.ablation == ablation
    assert figures.made["command"] == MADE["command"] and figures.made["version"] == sv.__version__
    assert "2 tiny batches" in figures.describe() and "tools/make_shipped.py" in figures.describe()
    figures.profile.check_parent(parent)


def test_a_large_profile_is_stored_smaller(tiny, tmp_path: Path, monkeypatch) -> None:
    parent, prof, ablation = tiny
    monkeypatch.setattr(shipped, "SIZE_BUDGET", 100)
    shipped.save_shipped(parent, prof, ablation, MADE, directory=tmp_path)
    small = shipped.load_shipped(parent.name, tmp_path).profile
    assert small.residual_abs_sums.dtype == np.float32 and small.num_shards == 0
    np.testing.assert_allclose(small.residual_importance, prof.residual_importance, rtol=1e-6)


def test_an_unknown_name_suggests_the_shipped_one(tiny, saved: Path) -> None:
    name = tiny[0].name
    with pytest.raises(UnknownNameError, match=f"did you mean {name!r}"):
        shipped.load_shipped(name[:-1], saved)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda record, npz: npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789"), "does not match the digest"),
        (lambda record, npz: npz.unlink(), "is missing"),
        (
            lambda record, npz: edit(record, ablation={"baseline": 1.0, "removed": [1.0], "duplicated": [1.0]}),
            "ablated blocks",
        ),
        (lambda record, npz: edit(record, ablation={"baseline": "x", "removed": [], "duplicated": []}), "finite"),
        (lambda record, npz: edit(record, profile_file="../elsewhere.npz"), "plain .npz file name"),
        (lambda record, npz: edit(record, made={"command": "?"}), "'made' must say"),
        (lambda record, npz: record.write_text("{not json"), "json|JSON"),
    ],
)
def test_damage_is_named(tiny, saved: Path, damage, expected: str) -> None:
    name = tiny[0].name
    damage(saved / f"{name}.json", saved / f"{name}.profile.npz")
    with pytest.raises(DamagedFileError, match=expected) as caught:
        shipped.load_shipped(name, saved)
    assert name in str(caught.value)


def edit(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_the_package_ships_smollm2_and_it_validates() -> None:
    assert "smollm2-135m" in shipped.available()
    for name in shipped.available():
        figures = shipped.load_shipped(name)
        assert len(figures.ablation.removed) == figures.profile.num_layers
        files = [shipped.DATA / f"{name}.json", shipped.DATA / figures.profile_file]
        assert sum(path.stat().st_size for path in files) < 2.2e6, "about 2 MB per parent at most"
