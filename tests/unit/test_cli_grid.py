"""``subclone-viz grid`` (the size grid, or with a budget the budget chooser) and the report's "what the cut
loses" section, run in-process on a tiny local Llama with a word-level tokenizer and a small local corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from subclone_viz.budget import BudgetGrid
from subclone_viz.cli import main
from subclone_viz.sizing import SizeGrid
from tiny import WORDS, tiny_model, word_tokenizer


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-grid")
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))
    llama = root / "llama"
    tiny_model("llama").save_pretrained(llama)
    word_tokenizer().save_pretrained(llama)
    return {"llama": llama, "corpus": corpus}


def grid_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "grid",
        "--parent",
        str(files["llama"]),
        "--data",
        str(files["corpus"]),
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--layers",
        "1,2",
        "--hidden",
        "24,48",
        "--profile-tokens",
        "64",
        "--eval-tokens",
        "64",
        "--out",
        str(out),
        *extra,
    ]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_grid_saves_the_size_grid_and_its_pareto_figure(files, tmp_path, capsys):
    out = tmp_path / "grid"
    code, stdout, _ = run(capsys, *grid_args(files, out), "--json")
    assert code == 0
    document = json.loads(stdout)
    assert document["files"] == ["size_grid.json", "size_pareto.html", "size_pareto.png"]
    grid = SizeGrid.load(out / "size_grid.json")
    assert (grid.layers, grid.hidden) == ([1, 2], [24, 48])
    assert document["size_grid"]["layers"] == [1, 2]
    assert (out / "size_pareto.png").read_bytes().startswith(b"\x89PNG")
    assert "<script src=" not in (out / "size_pareto.html").read_text()


def test_grid_with_a_token_budget_forecasts_every_cell_and_draws_the_budget_front(files, tmp_path, capsys):
    out = tmp_path / "budget"
    argv = grid_args(files, out, "--budget-tokens", "1536", "--pilot-fraction", "0.5")
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    grid = BudgetGrid.load(out / "budget_grid.json")
    assert grid.tokens == 1536 and grid.flops is None
    assert all(0.5 * c["steps"] <= c["pilot_steps"] <= c["steps"] for c in grid.cells)  # --pilot-fraction 0.5
    assert {(c["layers"], c["hidden"], c["init"]) for c in grid.cells} == {
        (layers, hidden, "subclone") for layers in (1, 2) for hidden in (24, 48)
    }
    assert sorted(p.name for p in out.iterdir()) == ["budget_grid.json", "budget_pareto.html", "budget_pareto.png"]
    assert "forecast at 1,536 tokens" in stdout and "saved to" in stdout

    page = tmp_path / "report.html"
    report = ["report", "--parent", str(files["llama"]), "--data", str(files["corpus"]), "--quick", "--no-cut"]
    code, _, err = run(capsys, *report, "--budget-grid", str(out / "budget_grid.json"), "--out", str(page))
    assert code == 0, err
    assert "A size for a training budget" in page.read_text()


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--budget-tokens", "1e6", "--budget-flops", "1e12"], ["not allowed with argument"]),
        (["--budget-tokens", "0"], ["--budget-tokens", "0 is out of range", "> 0"]),
        (["--budget-flops", "lots"], ["'lots' is not a number"]),
        (["--pilot-fraction", "0.5"], ["--pilot-fraction", "only apply with a budget"]),
        (["--inits", "random"], ["--inits", "only apply with a budget"]),
        (["--budget-tokens", "1e6", "--pilot-fraction", "0"], ["0 is out of range", "<= 1"]),
        (["--budget-tokens", "1e6", "--pilot-fraction", "1.5"], ["1.5 is out of range"]),
        (["--budget-tokens", "1e6", "--inits", "best"], ["unknown 'best'"]),
        (["--layers", "2,1"], ["increasing"]),
        (["--hidden", "0"], ["whole numbers >= 1"]),
        (["--profile", "{tmp}/missing.npz"], ["missing.npz", "no such file"]),
    ],
)
def test_grid_bad_arguments_exit_2_with_one_line_and_write_nothing(files, tmp_path, capsys, extra, fragments):
    extra = [argument.replace("{tmp}", str(tmp_path)) for argument in extra]
    code, out, err = run(capsys, *grid_args(files, tmp_path / "grid"), *extra)
    lines = err.strip().splitlines()
    assert (code, out, len(lines)) == (2, "", 1), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_grid_refuses_an_existing_output_before_any_work(files, tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(capsys, *grid_args(files, out, "--budget-tokens", "1e6"))
    assert code == 2 and "--overwrite" in err and "grid" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_report_shows_what_the_cut_loses_unless_told_not_to(files, tmp_path, capsys):
    common = ["report", "--parent", str(files["llama"]), "--data", str(files["corpus"]), "--quick", "--json"]
    code, out, err = run(capsys, *common, "--out", str(tmp_path / "with.html"))
    assert code == 0, err
    assert json.loads(out)["cut_section"] is True
    page = (tmp_path / "with.html").read_text()
    assert "What the cut loses" in page and "untrained destination" in page
    code, out, err = run(capsys, *common, "--no-cut", "--out", str(tmp_path / "without.html"))
    assert code == 0, err
    assert json.loads(out)["cut_section"] is False
    assert "What the cut loses" not in (tmp_path / "without.html").read_text()
