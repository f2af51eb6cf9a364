"""The docs' results page is generated from bench/results/: every figure file (or its sidecar) records its
command, machine, date and headline, and a file without them stops the page with an error naming it."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "bench"))

import results_page  # noqa: E402
from _results import save_results  # noqa: E402
from results_page import ResultsFileError, collect, render  # noqa: E402

META = {
    "command": "python bench/bench_x.py --fast",
    "machine": {"cpus": 2, "device": "cpu"},
    "date": "2026-12-06",
    "headline": ["X is 2.0x faster."],
}


def write(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_every_committed_figure_file_reaches_the_page() -> None:
    entries = collect()
    files = sorted(p for p in results_page.RESULTS.rglob("*.json") if not p.name.endswith(".meta.json"))
    assert [e.path for e in entries] == [p.relative_to(results_page.RESULTS) for p in files]
    page = render(entries)
    for entry in entries:
        assert entry.meta["command"].strip() in page
        assert f"bench/results/{entry.path.as_posix()}" in page
    assert "speedup_study/speedup_by_size.png" in page  # the study's image, named by its sidecar


def test_a_file_without_its_provenance_is_refused_by_name(tmp_path: Path) -> None:
    write(tmp_path / "good" / "a.json", {**META, "figures": [1, 2]})
    write(tmp_path / "bad" / "b.json", {"command": "python bench/bench_b.py", "figures": [1, 2]})
    with pytest.raises(ResultsFileError) as refused:
        collect(tmp_path)
    message = str(refused.value)
    assert str(tmp_path / "bad" / "b.json") in message
    assert "lacks machine, date, headline" in message and "b.meta.json" in message


def test_a_sidecar_supplies_what_a_record_cannot_hold(tmp_path: Path) -> None:
    write(tmp_path / "study" / "study.json", {"format": "some.record", "version": 1})
    write(tmp_path / "study" / "study.meta.json", {**META, "title": "A study"})
    (entry,) = collect(tmp_path)
    assert entry.title == "A study" and entry.meta["command"] == META["command"]
    assert "## A study" in render([entry])


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"date": "yesterday"}, "is not a YYYY-MM-DD date"),
        ({"command": ""}, "'command' must be"),
        ({"headline": "one sentence"}, "'headline' must be a list"),
        ({"images": ["missing.png"]}, "names the image missing.png"),
    ],
)
def test_malformed_provenance_is_refused(tmp_path: Path, change: dict, complaint: str) -> None:
    write(tmp_path / "x.json", {**META, **change})
    with pytest.raises(ResultsFileError, match=complaint):
        collect(tmp_path)


def test_damaged_json_and_orphan_sidecars_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"command": ')
    with pytest.raises(ResultsFileError, match="cannot be read as JSON"):
        collect(tmp_path)
    (tmp_path / "x.json").unlink()
    write(tmp_path / "y.meta.json", META)
    with pytest.raises(ResultsFileError, match="a sidecar without its figure file y.json"):
        collect(tmp_path)


def test_a_file_written_by_save_results_is_picked_up(tmp_path: Path) -> None:
    path = save_results(
        tmp_path / "new" / "figures.json",
        {"ratio": 1.5},
        headline=["The ratio is 1.5."],
        command="python bench/bench_new.py",
    )
    (entry,) = collect(tmp_path)
    assert entry.path == path.relative_to(tmp_path)
    page = render([entry])
    assert "- The ratio is 1.5." in page and "python bench/bench_new.py" in page
    assert f"{json.loads(path.read_text())['machine']['cpus']} CPU cores" in page


def test_the_command_line_writes_the_page_or_one_error_line(tmp_path: Path, capsys) -> None:
    write(tmp_path / "results" / "x.json", META)
    assert results_page.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "page.md")]) == 0
    assert "X is 2.0x faster." in (tmp_path / "page.md").read_text()
    write(tmp_path / "results" / "y.json", {})
    assert results_page.main(["--results", str(tmp_path / "results")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "y.json lacks command, machine, date, headline" in error


def test_the_module_example_runs() -> None:
    failed, attempted = doctest.testmod(results_page, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
