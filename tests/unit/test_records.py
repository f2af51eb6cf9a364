"""One record protocol: every saved result is a registered records.Record with a format and an integer
version, round-trips through save/load, refuses a newer version naming the file, and files written before
records were versioned (tests/fixtures/old_records, written by the previous release; the committed speedup
study of bench/results) still load."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from subclone_viz._atomic import DamagedFileError
from subclone_viz.compare import Comparison
from subclone_viz.plan import SubclonePlan
from subclone_viz.profile import Profile
from subclone_viz.records import RECORDS, load_record
from subclone_viz.sizing import SizeGrid
from subclone_viz.study import SpeedupStudy
from subclone_viz.train import History

ROOT = Path(__file__).resolve().parents[2]
OLD = ROOT / "tests" / "fixtures" / "old_records"
# Each record class, and a file of it written before records were versioned.
OLD_FILES = {
    Profile: OLD / "profile.npz",
    SubclonePlan: OLD / "plan.json",
    History: OLD / "history.json",
    Comparison: OLD / "comparison",
    SizeGrid: OLD / "size_grid.json",
    SpeedupStudy: ROOT / "bench" / "results" / "speedup_study" / "study.json",
}


def test_every_saved_result_is_a_registered_record():
    for cls in OLD_FILES:
        assert RECORDS[cls.FORMAT] is cls
        assert isinstance(cls.VERSION, int)
        for spelling in ("from_json", "save_json", "load_json"):  # save/load is the one spelling
            assert not hasattr(cls, spelling), f"{cls.__name__}.{spelling}"


def test_files_written_before_records_were_versioned_still_load():
    profile = Profile.load(OLD_FILES[Profile])
    assert profile.tokens == 40 and profile.num_shards == 2 and "norm_in_abs" in profile.stats
    plan = SubclonePlan.load(OLD_FILES[SubclonePlan])
    assert plan.version == "0.1.0" and plan.layers == [0, 3] and len(plan.residual) == 24
    assert History.load(OLD_FILES[History]).evals[0].loss == 2.5
    assert Comparison.load(OLD_FILES[Comparison]).metrics["random"]["final_loss"] == 2.5
    grid = SizeGrid.load(OLD_FILES[SizeGrid])
    assert grid.shape == (2, 2) and np.isnan(grid.params[0, 0]) and grid.params[1, 1] > grid.params[0, 1]
    study = SpeedupStudy.load(OLD_FILES[SpeedupStudy])
    assert study.config["parent"]["name"] == "smollm2-135m" and study.sizes


@pytest.mark.parametrize("cls", list(OLD_FILES), ids=lambda cls: cls.__name__)
def test_a_record_round_trips_through_save_and_load(cls, tmp_path):
    record = cls.load(OLD_FILES[cls])
    target = tmp_path / ("saved.npz" if cls is Profile else "saved" if cls is Comparison else "saved.json")
    saved = record.save(target)
    again = cls.load(saved)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(record.to_dict(), sort_keys=True)
    assert json.loads(json.dumps(again.to_document()))["version"] == cls.VERSION
    assert cls.from_dict(json.loads(json.dumps(record.to_document()))).to_dict() == json.loads(
        json.dumps(record.to_dict())
    )
    if cls not in (Profile, Comparison):
        assert type(load_record(saved)) is cls


@pytest.mark.parametrize(
    "cls", [SubclonePlan, History, SizeGrid, SpeedupStudy, Comparison], ids=lambda cls: cls.__name__
)
def test_a_newer_version_is_refused_naming_the_file(cls, tmp_path):
    saved = cls.load(OLD_FILES[cls]).save(tmp_path / ("run" if cls is Comparison else "saved.json"))
    document = saved / "summary.json" if cls is Comparison else saved
    data = json.loads(document.read_text())
    document.write_text(json.dumps({**data, "version": cls.VERSION + 1}))
    with pytest.raises(DamagedFileError, match=f"version {cls.VERSION + 1}; this subclone_viz reads") as raised:
        cls.load(saved)
    assert str(document) in str(raised.value)


def test_a_file_of_another_kind_is_refused(tmp_path):
    shutil.copy(OLD_FILES[SpeedupStudy], tmp_path / "study.json")
    with pytest.raises(DamagedFileError, match="is a 'subclone_viz.speedup_study' file, not a 'subclone_viz.plan'"):
        SubclonePlan.load(tmp_path / "study.json")
