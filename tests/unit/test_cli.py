"""Tests of the ``subclone-viz`` command line, run in-process with ``main([...])`` on tiny local parents.

The parents are tiny random models from tests/tiny.py saved as ordinary model directories (a Llama with a
word-level tokenizer built offline, a timm ViT that reads sklearn's digits), and the text is a small local
.txt file, so nothing here needs the hub or the embedded SmolLM2.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from subclone_viz import cli_commands
from subclone_viz.cli import main
from subclone_viz.parent import load_parent
from subclone_viz.profile import Profile
from tiny import WORDS, tiny_model, word_tokenizer


def save_text_parent(directory: Path, name: str, seed: int = 0) -> Path:
    model = tiny_model(name, seed=seed)
    model.save_pretrained(directory)
    word_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))  # 2,700 train + 300 held-out tokens
    vit_dir = root / "vit"
    from timm.models import save_for_hf

    save_for_hf(tiny_model("vit"), vit_dir, safe_serialization=True)
    return {
        "llama": save_text_parent(root / "llama", "llama"),
        "other_llama": save_text_parent(root / "other-llama", "llama", seed=1),
        "bert": save_text_parent(root / "bert", "bert"),
        "vit": vit_dir,
        "corpus": corpus,
    }


def text_args(files: dict[str, Path], parent: str = "llama") -> list[str]:
    return ["--parent", str(files[parent]), "--data", str(files["corpus"]), "--seq-len", "16", "--batch-size", "2"]


def spec_args(out: Path, *extra: str) -> list[str]:
    return ["--hidden", "24", "--ffn", "40", "--heads", "3", "--kv-heads", "1", "--out", str(out), *extra]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------ info


def test_info_lists_the_valid_spec_ranges(files, capsys):
    code, out, _ = run(capsys, "info", "--parent", str(files["llama"]))
    assert code == 0
    assert "4 layers, hidden 48, 6 heads / 2 KV heads of 8, FFN 80" in out
    assert "--hidden    3, 6, ..., 48 (step 3)" in out  # transformers needs heads to divide hidden
    assert "--heads     3, 6 (multiples of its 3 queries per KV head)" in out
    assert "--kv-heads  1, 2" in out

    code, out, _ = run(capsys, "info", "--parent", str(files["llama"]), "--json")
    document = json.loads(out)
    assert code == 0
    assert document["dims"] == {"layers": 4, "hidden": 48, "ffn": 80, "heads": 6, "kv_heads": 2, "head_dim": 8}
    assert document["choices"]["heads"] == [3, 6]
    assert document["choices"]["layers"] == list(range(1, 9))
    assert document["task"] == "causal-lm"


def test_help_exits_zero(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "subclone" in out and "profile" in out


# ------------------------------------------------------------------------------------------------ profile


def test_profile_json_is_one_document_and_the_saved_profile_loads(files, tmp_path, capsys):
    path = tmp_path / "profile.npz"
    code, out, _ = run(capsys, "profile", *text_args(files), "--tokens", "64", "--out", str(path), "--json")
    assert code == 0
    document = json.loads(out)  # the whole of stdout is one JSON document
    saved = Profile.load(path)
    assert document["output"] == str(path)
    assert document["tokens"] == saved.tokens == 64  # 2 batches of 2 x 16
    assert set(document["blocks"]) == {"f_over_sum", "f_over_x", "one_minus_cos"}
    assert all(len(values) == 4 for values in document["blocks"].values())
    assert document["blocks"]["f_over_sum"] == pytest.approx(saved.block_metrics["f_over_sum"].tolist(), abs=1e-6)
    assert "corpus.txt (train split" in document["source"]


def test_profile_prints_a_row_per_block_and_the_rank_consistency(files, capsys):
    code, out, _ = run(capsys, "profile", *text_args(files), "--tokens", "32", "--split", "heldout")
    assert code == 0
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("block"))
    assert "||f(x)|| / ||x + f(x)||" in lines[header] and "1 - cos(x, x + f(x))" in lines[header]
    rows = [line.split() for line in lines[header + 1 : header + 5]]
    assert [row[0] for row in rows] == ["0", "1", "2", "3"]
    assert all(len(row) == 4 and all(0 <= float(value) for value in row[1:]) for row in rows)
    assert "median adjacent-layer Spearman" in out
    assert "most consistent: block" in out and "least consistent: block" in out
    assert "heldout split" in out


def test_profile_refuses_to_overwrite_without_the_flag(files, tmp_path, capsys):
    path = tmp_path / "profile.npz"
    path.write_bytes(b"keep me")
    code, out, err = run(capsys, "profile", *text_args(files), "--tokens", "32", "--out", str(path))
    assert_one_line_error(code, out, err, str(path), "--overwrite")
    assert path.read_bytes() == b"keep me"

    code, _, _ = run(capsys, "profile", *text_args(files), "--tokens", "32", "--out", str(path), "--overwrite")
    assert code == 0
    assert Profile.load(path).tokens == 32


def test_profile_of_a_vision_parent_reads_digits(files, capsys):
    code, out, _ = run(
        capsys,
        "profile",
        "--parent",
        str(files["vit"]),
        "--data",
        "digits",
        "--batch-size",
        "4",
        "--tokens",
        "100",
        "--json",
    )
    document = json.loads(out)
    assert code == 0
    assert document["tokens"] == 136  # 2 batches of 4 images x (16 patches + cls): the first batch past 100
    assert document["source"].startswith("sklearn digits (train split")


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "command, extra, fragments",
    [
        ("profile", ["--tokens", "0"], ["--tokens", "0 is out of range", ">= 1"]),
        ("profile", ["--tokens", "many"], ["'many' is not an integer"]),
        ("profile", ["--out", "{tmp}/profile.txt"], ["must end in .npz"]),
        ("profile", ["--split", "test"], ["invalid choice: 'test'", "'heldout'"]),
        ("profile", ["--device", "tpu"], ["device='tpu'", "'auto'"]),
        ("profile", ["--dtype", "int8"], ["invalid choice: 'int8'", "'float32'"]),
        ("profile", ["--data", "{tmp}/missing.txt"], ["missing.txt", "no such file"]),
        ("subclone", ["--layers", "3", "--hidden", "99", "--out", "{tmp}/out"], ["hidden=99", "<= 48"]),
        ("subclone", ["--layers", "3", "--hidden", "24", "--heads", "4", "--out", "{tmp}/out"], ["heads=4", "3, 6"]),
        (
            "subclone",
            ["--layers", "3", "--hidden", "24", "--heads", "3", "--kv-heads", "2", "--out", "{tmp}/out"],
            ["kv_heads=2", "kv_heads=1"],
        ),
        ("subclone", ["--layers", "3", "--hidden", "24", "--ffn", "81", "--out", "{tmp}/out"], ["ffn=81", "<= 80"]),
        (
            "subclone",
            ["--layers", "5", "--depth", "first", "--hidden", "24", "--out", "{tmp}/out"],
            ["layers=5", "depth='middle'"],
        ),
        (
            "subclone",
            ["--layers", "5", "--depth", "metric", "--hidden", "24", "--out", "{tmp}/out"],
            ["layers=5", "depth='middle'"],
        ),
        ("subclone", ["--layers", "0,1,4", "--hidden", "24", "--out", "{tmp}/out"], ["[4]", "0 to 3"]),
        ("subclone", ["--layers", "a,b", "--hidden", "24", "--out", "{tmp}/out"], ["'a,b'", "comma list"]),
        (
            "subclone",
            ["--layers", "3", "--depth", "0,1", "--hidden", "24", "--out", "{tmp}/out"],
            ["depth lists 2 blocks", "layers=3"],
        ),
        ("subclone", ["--depth", "sideways", "--hidden", "24", "--out", "{tmp}/out"], ["'sideways'", "middle"]),
        ("subclone", ["--hidden", "24", "--out", "{tmp}/out"], ["--layers is missing"]),
        (
            "subclone",
            ["--layers", "3", "--hidden", "24", "--width", "best", "--out", "{tmp}/out"],
            ["invalid choice: 'best'", "'importance'"],
        ),
        (
            "subclone",
            ["--layers", "3", "--hidden", "24", "--importance", "wanda", "--out", "{tmp}/out"],
            ["invalid choice: 'wanda'", "'layer_normalized'", "'taylor'"],
        ),
        (
            "subclone",
            ["--layers", "3", "--hidden", "24", "--profile", "{tmp}/none.npz", "--out", "{tmp}/out"],
            ["none.npz", "no such file"],
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(files, tmp_path, capsys, command, extra, fragments):
    extra = [argument.replace("{tmp}", str(tmp_path)) for argument in extra]
    before = sorted(tmp_path.iterdir())
    code, out, err = run(capsys, command, *text_args(files), *extra)
    assert_one_line_error(code, out, err, *fragments)
    assert sorted(tmp_path.iterdir()) == before  # no profile, no destination directory, no staging leftovers


def test_unloadable_parent_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"")
    code, out, err = run(capsys, "info", "--parent", str(tmp_path / "weights.bin"))
    assert_one_line_error(code, out, err, "weights.bin", "is a file")


def test_profile_of_another_parent_is_refused(files, tmp_path, capsys):
    other = tmp_path / "other.npz"
    assert run(capsys, "profile", *text_args(files, "other_llama"), "--tokens", "32", "--out", str(other))[0] == 0
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "subclone", *text_args(files), "--profile", str(other), "--layers", "3", *spec_args(out_dir)
    )
    assert_one_line_error(code, out, err, "profile the parent you subclone from")
    assert not out_dir.exists()


def test_bugs_keep_their_traceback(files, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(cli_commands, "profile", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["profile", *text_args(files), "--tokens", "32"])


def test_json_stdout_stays_pure_when_a_library_prints(files, capsys, monkeypatch):
    real_profile = cli_commands.profile

    def chatty(*args, **kwargs):
        print("chatter from a library")
        return real_profile(*args, **kwargs)

    monkeypatch.setattr(cli_commands, "profile", chatty)
    code, out, err = run(capsys, "profile", *text_args(files), "--tokens", "32", "--json")
    assert code == 0
    assert json.loads(out)["tokens"] == 32
    assert "chatter from a library" in err


# ------------------------------------------------------------------------------------------------ subclone


def test_subclone_saves_a_destination_that_loads(files, tmp_path, capsys):
    out_dir = tmp_path / "child"
    code, out, _ = run(
        capsys,
        "subclone",
        *text_args(files),
        "--layers",
        "3",
        "--profile-tokens",
        "32",
        "--eval-tokens",
        "32",
        *spec_args(out_dir, "--json"),
    )
    assert code == 0
    document = json.loads(out)
    assert document["dims"] == {"layers": 3, "hidden": 24, "ffn": 40, "heads": 3, "kv_heads": 1, "head_dim": 8}
    assert document["layers"] == [0, 1, 3]  # depth "middle" keeps the first and last blocks
    assert document["profile"]["tokens"] == 32 and document["profile"]["path"] is None
    assert math.isfinite(document["heldout"]["destination_loss"]) and math.isfinite(document["heldout"]["parent_loss"])
    assert document["output"] == str(out_dir)

    child = load_parent(out_dir)
    assert child.dims.to_dict() == document["dims"]
    assert sum(p.numel() for p in child.model.parameters()) == document["parameters"]
    record = json.loads((out_dir / "subclone.json").read_text())
    assert record["plan"]["layers"] == [0, 1, 3] and record["scaling"] == "sqrt"


@pytest.mark.parametrize("importance", ["layer_normalized", "taylor"])
def test_subclone_ranks_by_the_chosen_importance_estimator(files, tmp_path, capsys, importance):
    out_dir = tmp_path / "child"
    code, out, err = run(
        capsys,
        "subclone",
        *text_args(files),
        "--layers",
        "4",
        "--profile-tokens",
        "64",
        "--eval-tokens",
        "0",
        "--importance",
        importance,
        *spec_args(out_dir, "--json"),
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["importance"] == importance
    assert f"width=importance ({importance})" in document["plan"]
    assert "rows shuffled with seed 0" in document["profile"]["source"]  # a document-diverse calibration sample
    record = json.loads((out_dir / "subclone.json").read_text())
    assert record["plan"]["importance"] == importance


def test_subclone_text_names_plan_size_loss_and_place(files, tmp_path, capsys):
    profile_path = tmp_path / "profile.npz"
    assert run(capsys, "profile", *text_args(files), "--tokens", "32", "--out", str(profile_path))[0] == 0
    out_dir = tmp_path / "child"
    code, out, _ = run(
        capsys,
        "subclone",
        *text_args(files),
        "--profile",
        str(profile_path),
        "--layers",
        "2",
        "--eval-tokens",
        "32",
        *spec_args(out_dir),
    )
    assert code == 0
    assert "plan: 2 layers (parent blocks [0, 3]), hidden 24, FFN 40, 3 heads / 1 KV" in out
    assert "parameters: " in out and "of the parent's" in out
    assert f"32 tokens of corpus.txt (train split, 32 tokens, rows shuffled with seed 0) ({profile_path})" in out
    assert "held-out loss before training: " in out
    assert f"saved to {out_dir}" in out


def test_subclone_takes_a_depth_list_without_layers_and_needs_no_profile(files, tmp_path, capsys):
    out_dir = tmp_path / "child"
    code, out, _ = run(
        capsys,
        "subclone",
        *text_args(files),
        "--depth",
        "0,2,2,3",
        "--width",
        "uniform",
        "--eval-tokens",
        "0",
        *spec_args(out_dir, "--json"),
    )
    document = json.loads(out)
    assert code == 0
    assert document["layers"] == [0, 2, 2, 3] and document["depth"] == "explicit"
    assert document["profile"] is None and document["heldout"] is None


def test_subclone_refuses_a_non_empty_directory_without_overwrite(files, tmp_path, capsys):
    out_dir = tmp_path / "child"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    arguments = [
        "subclone",
        *text_args(files),
        "--layers",
        "2",
        "--width",
        "first",
        "--eval-tokens",
        "0",
        *spec_args(out_dir),
    ]
    code, out, err = run(capsys, *arguments)
    assert_one_line_error(code, out, err, str(out_dir), "--overwrite")
    assert [p.name for p in out_dir.iterdir()] == ["notes.txt"]

    code, _, _ = run(capsys, *arguments, "--overwrite")
    assert code == 0
    assert not (out_dir / "notes.txt").exists() and (out_dir / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------ ablate


def test_ablate_reports_every_block_removed_and_duplicated(files, capsys):
    code, out, _ = run(capsys, "ablate", *text_args(files), "--tokens", "32", "--json")
    document = json.loads(out)
    assert code == 0
    assert len(document["removed"]) == len(document["duplicated"]) == 4
    assert all(math.isfinite(loss) for loss in [document["baseline"], *document["removed"], *document["duplicated"]])
    assert "heldout split, 32 tokens" in document["data"]

    code, out, _ = run(capsys, "ablate", *text_args(files), "--tokens", "32")
    assert code == 0
    assert f"held-out loss {document['baseline']:.4f}" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["0", "1", "2", "3"]
    assert float(rows[2][1]) == pytest.approx(document["removed"][2], abs=1e-4)


def test_ablate_of_an_encoder_without_a_head_is_refused(files, capsys):
    code, out, err = run(capsys, "ablate", *text_args(files, "bert"), "--tokens", "32")
    assert_one_line_error(code, out, err, "encoder without a language-model head")


# ------------------------------------------------------------------------------------------------ compare


@pytest.fixture(scope="module")
def saved_profile(files, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "profile.npz"
    assert main(["profile", *text_args(files), "--tokens", "64", "--out", str(path)]) == 0
    return path


def compare_args(files, saved_profile, out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        *text_args(files),
        "--profile",
        str(saved_profile),
        "--layers",
        "2",
        *spec_args(out),
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--eval-tokens",
        "32",
        *extra,
    ]


def test_compare_saves_histories_summary_and_offline_plots(files, saved_profile, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, out, _ = run(
        capsys,
        *compare_args(
            files,
            saved_profile,
            out_dir,
            "--inits",
            "random,subclone,no-scaling",
            "--lr",
            "random=1e-3",
            "--wd",
            "0.01",
            "--json",
        ),
    )
    assert code == 0
    document = json.loads(out)
    table = {row["init"]: row for row in document["table"]}
    assert list(table) == ["random", "subclone", "no-scaling"]
    assert table["random"]["lr"] == 1e-3 and table["subclone"]["lr"] == 1e-3  # the tuned default where not set
    assert document["lr_preset"] == "tuned" and document["learning_rates"]["random"]["source"] == "set by the caller"
    assert {row["weight_decay"] for row in table.values()} == {0.01}
    assert all(row["steps"] == 4 and math.isfinite(row["final_loss"]) for row in table.values())
    assert table["random"]["speedup"] == 1.0
    assert (
        sorted(document["files"])
        == sorted(path.name for path in out_dir.iterdir())
        == [
            "histories.json",
            "loss_curves.html",
            "loss_curves.png",
            "no-scaling.csv",
            "random.csv",
            "subclone.csv",
            "summary.json",
        ]
    )
    csv_rows = (out_dir / "subclone.csv").read_text().splitlines()
    assert csv_rows[0].startswith("step,seen,train_loss") and len(csv_rows) == 1 + 5  # evaluation at 0, steps 1-4
    assert (out_dir / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out_dir / "loss_curves.html").read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js inlined: opens offline
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no staging directory left behind


def test_compare_prints_the_summary_table(files, saved_profile, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, out, _ = run(capsys, *compare_args(files, saved_profile, out_dir, "--lr", "3e-4"))
    assert code == 0
    header = next(line for line in out.splitlines() if line.strip().startswith("init"))
    assert header.split() == [
        "init",
        "lr",
        "wd",
        "steps",
        "initial",
        "loss",
        "final",
        "loss",
        "speedup",
        "speedup/s",
        "train",
        "s",
    ]
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("random", "subclone"))]
    assert [row[:3] for row in rows] == [["random", "0.0003", "0.1"], ["subclone", "0.0003", "0.001"]]
    assert [cell.rstrip("*") for cell in rows[0][-3:-1]] == ["1.00x", "1.00x"]
    starred = rows[0][-3].endswith("*")  # random init still falling after 4 steps: the footnote says so
    assert starred == ("* at this budget only: random init had not converged" in out)
    assert "learning rates: random 0.0003, subclone 0.0003 (set by the caller)" in out
    assert f"saved to {out_dir}: histories.json" in out


def test_compare_names_the_tuned_rates_and_the_paper_preset(files, saved_profile, tmp_path, capsys):
    code, out, _ = run(capsys, *compare_args(files, saved_profile, tmp_path / "tuned"))
    assert code == 0
    assert (
        "learning rates: random 0.003, subclone 0.001 (tuned: best of the sweep in bench/results/speedup_study" in out
    )
    code, out, _ = run(
        capsys, *compare_args(files, saved_profile, tmp_path / "paper", "--lr-preset", "paper", "--json")
    )
    assert code == 0
    document = json.loads(out)
    assert [row["lr"] for row in document["table"]] == [1e-4, 1e-4]
    assert document["lr_preset"] == "paper"
    assert "Table 1" in document["learning_rates"]["random"]["source"]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--inits", "random,bogus"], ["'bogus'", "subclone-calibrated"]),
        (["--inits", "random,random"], ["each init once"]),
        (["--inits", "random", "--lr", "subclone=1e-3"], ["--lr subclone=0.001", "not in --inits random"]),
        (["--lr", "fast"], ["'fast' is not a number"]),
        (["--lr", "0"], ["--lr", "'0'", "> 0"]),
        (["--wd", "-1"], ["out of range", ">= 0"]),
        (["--warmup", "10"], ["--warmup 10", "--steps 4"]),
        (["--schedule", "step"], ["invalid choice: 'step'", "'cosine'"]),
        (["--hidden", "96"], ["hidden=96", "<= 48"]),
        (
            ["--inits", "random,subclone+distill", "--distill-alpha", "2"],
            ["--distill-alpha", "2 is out of range", "from 0 to 1"],
        ),
        (
            ["--inits", "random,subclone+distill", "--distill-temperature", "0"],
            ["--distill-temperature", "0 is out of range", "> 0"],
        ),
        (["--distill-alpha", "0.3"], ["--distill-alpha only apply", "subclone+distill", "--inits random,subclone has"]),
    ],
)
def test_compare_bad_arguments_exit_2_before_training(files, saved_profile, tmp_path, capsys, extra, fragments):
    out_dir = tmp_path / "runs"
    code, out, err = run(capsys, *compare_args(files, saved_profile, out_dir), *extra)
    assert_one_line_error(code, out, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_compare_distills_with_the_given_settings(files, saved_profile, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, out, _ = run(
        capsys,
        *compare_args(
            files,
            saved_profile,
            out_dir,
            "--inits",
            "random,subclone+distill",
            "--distill-alpha",
            "0.3",
            "--distill-temperature",
            "2",
            "--json",
        ),
    )
    assert code == 0
    table = {row["init"]: row for row in json.loads(out)["table"]}
    assert (table["random"]["distill_alpha"], table["subclone+distill"]["distill_alpha"]) == (None, 0.3)
    assert table["subclone+distill"]["speedup_per_second"] is not None
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["config"]["distill"] == {"alpha": 0.3, "temperature": 2.0}


def test_compare_refuses_a_non_empty_directory(files, saved_profile, tmp_path, capsys):
    out_dir = tmp_path / "runs"
    out_dir.mkdir()
    (out_dir / "old.csv").write_text("keep")
    code, out, err = run(capsys, *compare_args(files, saved_profile, out_dir))
    assert_one_line_error(code, out, err, "--overwrite")
    assert (out_dir / "old.csv").read_text() == "keep"


# ------------------------------------------------------------------------------------------------ report


def test_quick_report_writes_one_offline_page(files, tmp_path, capsys):
    page = tmp_path / "report.html"
    code, out, _ = run(capsys, "report", *text_args(files)[:4], "--quick", "--out", str(page), "--json")
    assert code == 0
    document = json.loads(out)
    assert document["output"] == str(page) and document["bytes"] == page.stat().st_size
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script src=" not in html

    code, out, err = run(capsys, "report", *text_args(files)[:4], "--quick", "--out", str(page))
    assert_one_line_error(code, out, err, "--overwrite")
    assert page.read_text() == html


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--out", "{tmp}/report.pdf"], ["report.pdf", ".html"]),
        (["--data", "{tmp}/missing.txt"], ["missing.txt", "no such file"]),
        (["--layers", "2", "--hidden", "50"], ["hidden=50", "<= 48"]),
        (["--layers", "2"], ["--hidden is missing"]),
        (["--steps", "-1"], ["-1 is out of range"]),
        (["--speedup-study", "{tmp}/study.json"], ["study.json is missing"]),
        (["--budget-grid", "{tmp}/budget_grid.json"], ["budget_grid.json is missing"]),
    ],
)
def test_report_bad_arguments_write_nothing(files, tmp_path, capsys, extra, fragments):
    extra = [argument.replace("{tmp}", str(tmp_path)) for argument in extra]
    arguments = ["report", "--parent", str(files["llama"]), "--quick", "--out", str(tmp_path / "report.html"), *extra]
    code, out, err = run(capsys, *arguments)
    assert_one_line_error(code, out, err, *fragments)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ study


def study_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "study",
        *text_args(files),
        "--sizes",
        "3x30,2x24",
        "--random-lrs",
        "1e-3,1e-2",
        "--subclone-lrs",
        "1e-3",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--eval-tokens",
        "32",
        "--out",
        str(out),
        *extra,
    ]


def test_study_saves_the_study_and_its_figures_and_merges_studies_of_other_sizes(files, tmp_path, capsys):
    from subclone_viz.study import SpeedupStudy

    out_dir = tmp_path / "study"
    code, out, _ = run(
        capsys, *study_args(files, out_dir, "--distill-sizes", "2x24", "--distill-inits", "subclone+distill", "--json")
    )
    assert code == 0
    document = json.loads(out)
    assert (
        document["files"]
        == sorted(p.name for p in out_dir.iterdir())
        == ["speedup_by_size.html", "speedup_by_size.png", "study.json"]
    )
    assert [(row["destination"], row["init"]) for row in document["table"]] == [
        ("3 x 30", "random"),
        ("3 x 30", "subclone"),
        ("2 x 24", "random"),
        ("2 x 24", "subclone"),
        ("2 x 24", "subclone+distill"),
    ]
    assert {row["best_lr"] for row in document["table"] if row["init"] == "subclone"} == {1e-3}
    study = SpeedupStudy.load(out_dir / "study.json")
    assert study.table() == document["table"] and study.config["steps"] == 2
    assert "<script src=" not in (out_dir / "speedup_by_size.html").read_text()

    halves = []
    for size in ("3x30", "2x24"):
        half = tmp_path / size
        assert run(capsys, *study_args(files, half, "--sizes", size))[0] == 0
        halves.append(str(half / "study.json"))
    merged = tmp_path / "merged"
    code, out, _ = run(capsys, "study", "--merge", *halves, "--out", str(merged))
    assert code == 0 and "3 x 30" in out and "2 x 24" in out
    assert [size["label"] for size in SpeedupStudy.load(merged / "study.json").sizes] == ["3 x 30", "2 x 24"]

    # The same size under another seed joins it: one row per init, with the number of seeds behind it.
    other_seed = tmp_path / "seed1"
    assert run(capsys, *study_args(files, other_seed, "--sizes", "2x24", "--seed", "1"))[0] == 0
    seeds = tmp_path / "seeds"
    code, out, _ = run(
        capsys, "study", "--merge", halves[1], str(other_seed / "study.json"), "--out", str(seeds), "--json"
    )
    document = json.loads(out)
    assert code == 0 and document["config"]["seeds"] == [0, 1]
    assert [(row["destination"], row["init"], row["seeds"]) for row in document["table"]] == [
        ("2 x 24", "random", 2),
        ("2 x 24", "subclone", 2),
    ]
    assert isinstance(document["beyond_budget"], list)


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--sizes", "3x"], ["'3x' is not a size", "LAYERSxHIDDEN"]),
        (["--sizes", "2x24,2x24"], ["each once"]),
        (["--sizes", "2x50"], ["hidden=50", "<= 48"]),
        (["--distill-sizes", "4x24"], ["--distill-sizes 4x24 are not among --sizes"]),
        (["--distill-inits", "subclone"], ["'subclone'", "subclone+distill"]),
        (["--random-lrs", "1e-3,-1"], ["-1 is out of range"]),
        (["--merge", "{tmp}/missing.json"], ["--merge combines saved studies"]),
        (["--profile", "{tmp}/missing.npz"], ["missing.npz: no such file"]),
    ],
)
def test_study_bad_arguments_exit_2_before_training(files, tmp_path, capsys, extra, fragments):
    extra = [argument.replace("{tmp}", str(tmp_path)) for argument in extra]
    code, out, err = run(capsys, *study_args(files, tmp_path / "study"), *extra)
    assert_one_line_error(code, out, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_study_merge_names_a_damaged_study_and_writes_nothing(tmp_path, capsys):
    damaged = tmp_path / "a.json"
    damaged.write_text('{"format": "subclone_viz.speedup_study", "version": 1}')
    code, out, err = run(capsys, "study", "--merge", str(damaged), "--out", str(tmp_path / "merged"))
    assert_one_line_error(code, out, err, str(damaged), "'config' object")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
