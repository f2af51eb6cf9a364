"""The budget chooser under ``accelerate launch`` with two CPU processes (gloo): the pilots are dealt to the
ranks (each trains its share alone, nothing twice), every rank returns the whole grid, equal to the grid one
process computes on the same data, and the saved grid is written once."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_distributed import launch

import subclone_viz as sv
from tiny import WORDS, tiny_model, word_tokenizer

ONE_TORCH_THREAD = True
GRID = {"layers": [1, 2], "hidden": [24], "inits": ("subclone", "random")}
TOKENS = 32 * 24  # 24 steps of 2 x 16 tokens: pilots of 6 steps, evaluated after each

SCRIPT = """
import json, sys
from pathlib import Path
import subclone_viz as sv
from subclone_viz import budget, distributed

parent_dir, corpus, out, tokens = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
parent = sv.load_parent(parent_dir, device="cpu")
batches = sv.text_batches(corpus, parent.tokenizer, seq_len=16, batch_size=2, split="train", max_batches=8)
heldout = sv.text_batches(corpus, parent.tokenizer, seq_len=16, batch_size=2, split="heldout", max_batches=2)
prof = sv.profile(parent, batches, max_tokens=200, progress=False)
trained, train = [], budget.train


def counted(model, *args, **kwargs):
    trained.append((kwargs["label"], distributed.num_processes()))
    return train(model, *args, **kwargs)


budget.train = counted
grid = sv.budget_grid(parent, prof, [1, 2], [24], batches, heldout, tokens=tokens, inits=("subclone", "random"),
                      progress=False)
saved = grid.save(out / "budget.json")
rank = distributed.process_index()
(out / f"rank{rank}.json").write_text(json.dumps({"grid": grid.to_dict(), "trained": trained, "saved": str(saved)}))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("budget_distributed")
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))
    parent_dir = root / "llama"
    tiny_model("llama").save_pretrained(parent_dir)
    word_tokenizer().save_pretrained(parent_dir)
    return {"root": root, "llama": parent_dir, "corpus": corpus}


@pytest.fixture(scope="module")
def ranks(files, tmp_path_factory) -> tuple[list[dict], Path]:
    out = files["root"] / "out"
    out.mkdir()
    script = files["root"] / "budget_script.py"
    script.write_text(SCRIPT)
    with pytest.MonkeyPatch.context() as patch:  # the ranks' own cache: every pilot trained, none read
        patch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path_factory.mktemp("cache")))
        done = launch(str(script), str(files["llama"]), str(files["corpus"]), str(out), str(TOKENS), cwd=files["root"])
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)], out


def test_each_rank_trains_its_share_of_the_pilots_alone(ranks):
    results, _ = ranks
    trained = [[tuple(t) for t in r["trained"]] for r in results]
    labels = [label for share in trained for label, _ in share]
    assert sorted(labels) == sorted(f"{layers} x 24 {init} pilot" for layers in (1, 2) for init in GRID["inits"])
    assert all(len(share) == 2 for share in trained)  # dealt evenly, none trained twice
    assert all(processes == 1 for share in trained for _, processes in share)  # alone: no DDP across ranks


def test_every_rank_returns_the_grid_one_process_computes(ranks, files, tmp_path, monkeypatch):
    results, out = ranks
    assert results[0]["grid"] == results[1]["grid"]
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))
    parent = sv.load_parent(files["llama"], device="cpu")
    batches = sv.text_batches(files["corpus"], parent.tokenizer, seq_len=16, batch_size=2, split="train", max_batches=8)
    heldout = sv.text_batches(
        files["corpus"], parent.tokenizer, seq_len=16, batch_size=2, split="heldout", max_batches=2
    )
    prof = sv.profile(parent, batches, max_tokens=200, progress=False)
    single = sv.budget_grid(
        parent, prof, GRID["layers"], GRID["hidden"], batches, heldout, tokens=TOKENS, inits=GRID["inits"],
        cache=False, progress=False,
    )  # fmt: skip
    distributed = results[0]["grid"]["cells"]
    assert [(c["layers"], c["init"]) for c in distributed] == [(c["layers"], c["init"]) for c in single.cells]
    for mine, theirs in zip(distributed, single.cells):
        assert mine["pilot"]["steps"] == theirs["pilot"]["steps"]
        assert mine["pilot"]["losses"] == pytest.approx(theirs["pilot"]["losses"], rel=1e-5)
        assert mine["forecast"]["loss"] == pytest.approx(theirs["forecast"]["loss"], rel=1e-5)


def test_the_grid_is_saved_once(ranks):
    results, out = ranks
    assert {r["saved"] for r in results} == {str(out / "budget.json")}
    assert sv.BudgetGrid.load(out / "budget.json").to_dict() == results[0]["grid"]
