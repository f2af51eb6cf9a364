"""Two CPU processes under ``accelerate launch`` (gloo): the same results as one process, one output.

Each test launches ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`` on a tiny local
parent (a saved random Llama with a word-level tokenizer, as in tests/unit/test_cli.py) and compares what
the two processes did with what one process does on the same data in this test's own process:

* a library script (``RANK_SCRIPT``) profiles, evaluates, ablates, trains (stopped, then resumed from its
  checkpoint) and compares after the user made a bare ``PartialState()`` (which used to make both processes
  rank 0) and dumps each rank's results;
* the CLI ``profile`` writes one ``.npz`` equal to a single-process profile;
* the CLI ``compare --json`` exits 0 on every rank, prints one JSON document and writes one directory.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import subclone_viz as sv
from subclone_viz.cli import main
from tiny import WORDS, tiny_batches, tiny_model, word_tokenizer

ONE_TORCH_THREAD = True
REPO = Path(__file__).resolve().parents[2]
SEQ_LEN, BATCH_SIZE = 16, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*command: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch`` two CPU processes running ``command`` (a script path, or ``-m module ...``)."""
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        *command,
    ]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))
    parent_dir = root / "llama"
    tiny_model("llama").save_pretrained(parent_dir)
    word_tokenizer().save_pretrained(parent_dir)
    return {"root": root, "llama": parent_dir, "corpus": corpus}


def text_args(files: dict[str, Path]) -> list[str]:
    return [
        "--parent",
        str(files["llama"]),
        "--data",
        str(files["corpus"]),
        "--seq-len",
        str(SEQ_LEN),
        "--batch-size",
        str(BATCH_SIZE),
    ]


RANK_SCRIPT = """
import json, sys
from pathlib import Path
from accelerate import PartialState

user_state = PartialState()  # a bare PartialState made before the library runs: it must not change anything
import torch
import subclone_viz as sv
from subclone_viz import distributed

parent_dir, corpus, out = sys.argv[1:4]
TAYLOR = ("taylor_residual", "taylor_ffn", "taylor_attn", "taylor_tokens")
parent = sv.load_parent(parent_dir, device="cpu")
batches = sv.text_batches(corpus, parent.tokenizer, seq_len=16, batch_size=2, split="train", max_batches=5)
heldout = sv.text_batches(corpus, parent.tokenizer, seq_len=16, batch_size=2, split="heldout", max_batches=3)

forwards = []
logits = parent.family.logits
parent.family.logits = lambda model, batch: forwards.append(batch["input_ids"].tolist()) or logits(model, batch)
prof = sv.profile(parent, batches, max_tokens=100, progress=False)
parent.family.logits = logits
taylor = sv.add_taylor(prof, parent, batches, max_tokens=100, progress=False)
from tiny import tiny_batches, tiny_model

vit = sv.load_parent(tiny_model("vit"), device="cpu")
vit_profile = sv.profile(vit, tiny_batches("vit", count=5), max_tokens=100, progress=False)  # 17 tokens an image
vit_taylor = sv.add_taylor(vit_profile, vit, tiny_batches("vit", count=5), max_tokens=100, progress=False)
evaluation = sv.evaluate(parent.model, parent.family, heldout)
ablation = sv.block_ablation(parent, heldout, progress=False)
path = prof.save(Path(out) / "profile.npz")
try:
    prof.save(path)  # exists: the main process refuses, and every process raises its error
    refused = None
except FileExistsError as error:
    refused = str(error)

# DDP training, and a run stopped at step 2 then resumed from its checkpoint.
import threading
from subclone_viz.train import EvalRecord


def fresh():
    torch.manual_seed(0)
    return type(parent.model)(parent.model.config)


settings = dict(steps=4, lr=1e-3, weight_decay=0.0, eval_every=2, progress=False, eval_batches=heldout)
full = sv.train(fresh(), batches, **settings)
stop = threading.Event()
stop_after_2 = lambda history, record: isinstance(record, EvalRecord) and record.step == 2 and stop.set()
first = sv.train(fresh(), batches, checkpoint_dir=sys.argv[4], stop=stop, callback=stop_after_2, **settings)
resumed = sv.train(fresh(), batches, checkpoint_dir=sys.argv[4], resume=True, **settings)
spec = sv.DestinationSpec(layers=2, hidden=24, ffn=40, heads=3, kv_heads=1)
comparison = sv.compare(parent, spec, batches, steps=2, eval_batches=heldout, profile=prof, progress=False)
saved_comparison = comparison.save(Path(out) / "comparison")

rank = distributed.process_index()
record = {
    "rank": rank, "processes": distributed.num_processes(), "user_rank": user_state.process_index,
    "forwards": forwards, "saved": str(path), "refused": refused, "tokens": prof.tokens,
    "block_sums": prof.block_sums.tolist(), "residual_abs_sums": prof.residual_abs_sums.tolist(),
    "ffn_abs_sums": prof.ffn_abs_sums.tolist(), "attn_abs_sums": prof.attn_abs_sums.tolist(),
    "norm_in_abs": prof.stats["norm_in_abs"].tolist(), "shard_tokens": prof.shards["tokens"].tolist(),
    "shard_residual_abs_sums": prof.shards["residual_abs_sums"].tolist(),
    "loss": evaluation.loss, "batches": evaluation.batches, "ablation": ablation.to_dict(),
    "train": {name: [(r.step, r.seen, r.loss) for r in h.steps + h.evals] for name, h in
              {"full": full, "first": first, "resumed": resumed}.items()},
    "vit_tokens": vit_profile.tokens, "vit_residual": vit_profile.residual_abs_sums.tolist(),
    "train_processes": full.config["num_processes"], "stopped": first.stopped_early,
    "comparison": comparison.to_dict()["histories"], "saved_comparison": str(saved_comparison),
    "taylor": {name: taylor.stats[name].tolist() for name in TAYLOR},
    "taylor_shard_tokens": taylor.shards["taylor_tokens"].tolist(),
    "vit_taylor": {name: vit_taylor.stats[name].tolist() for name in TAYLOR},
}
(Path(out) / f"rank{rank}.json").write_text(json.dumps(record))
"""


@pytest.fixture(scope="module")
def ranks(files) -> tuple[list[dict], Path]:
    """Each rank's results from one 2-process run of RANK_SCRIPT."""
    out = files["root"] / "ranks"
    out.mkdir()
    script = files["root"] / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    checkpoints = files["root"] / "checkpoints"
    done = launch(str(script), str(files["llama"]), str(files["corpus"]), str(out), str(checkpoints), cwd=files["root"])
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)], out


@pytest.fixture(scope="module")
def single(files):
    """The same calls in this one process."""
    parent = sv.load_parent(files["llama"], device="cpu")
    batches = sv.text_batches(
        files["corpus"], parent.tokenizer, seq_len=SEQ_LEN, batch_size=BATCH_SIZE, split="train", max_batches=5
    )
    heldout = sv.text_batches(
        files["corpus"], parent.tokenizer, seq_len=SEQ_LEN, batch_size=BATCH_SIZE, split="heldout", max_batches=3
    )
    return {
        "batches": [b["input_ids"].tolist() for b in batches],
        "profile": sv.profile(parent, batches, max_tokens=100, progress=False),
        "evaluation": sv.evaluate(parent.model, parent.family, heldout),
        "ablation": sv.block_ablation(parent, heldout, progress=False),
    }


def test_a_users_partial_state_does_not_make_every_process_rank_0(ranks):
    records, _ = ranks
    assert [r["rank"] for r in records] == [0, 1]
    assert [r["user_rank"] for r in records] == [0, 1]
    assert all(r["processes"] == 2 for r in records)


def test_each_rank_profiles_a_disjoint_share_of_the_same_batches_one_process_reads(ranks, single):
    records, _ = ranks
    # max_tokens=100 with 32-token batches: one process reads batches 0-3; rank 0 gets 0 and 2, rank 1 gets 1 and 3.
    assert records[0]["forwards"] == [single["batches"][0], single["batches"][2]]
    assert records[1]["forwards"] == [single["batches"][1], single["batches"][3]]
    assert single["profile"].tokens == 128


def test_every_rank_ends_with_the_single_process_profile(ranks, single):
    records, _ = ranks
    expected = single["profile"]
    for record in records:
        assert record["tokens"] == expected.tokens
        for name in ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums"):
            np.testing.assert_allclose(record[name], getattr(expected, name), rtol=1e-5, atol=1e-8)
        # The estimators' statistics and the per-shard sums (batch g in shard g % 8 on every rank) match too.
        np.testing.assert_allclose(record["norm_in_abs"], expected.stats["norm_in_abs"], rtol=1e-5, atol=1e-8)
        assert record["shard_tokens"] == expected.shards["tokens"].tolist()
        np.testing.assert_allclose(
            record["shard_residual_abs_sums"], expected.shards["residual_abs_sums"], rtol=1e-5, atol=1e-8
        )


def test_an_image_parent_profiles_the_same_images_as_one_process(ranks):
    records, _ = ranks
    vit = sv.load_parent(tiny_model("vit"), device="cpu")
    expected = sv.profile(vit, tiny_batches("vit", count=5), max_tokens=100, progress=False)
    assert expected.tokens == 102  # 3 batches of 2 images x 17 tokens: the third reaches 100
    for record in records:
        assert record["vit_tokens"] == expected.tokens
        np.testing.assert_allclose(record["vit_residual"], expected.residual_abs_sums, rtol=1e-5, atol=1e-8)


def test_taylor_sums_under_two_processes_equal_one_process_on_every_rank(ranks, files):
    records, _ = ranks
    parent = sv.load_parent(files["llama"], device="cpu")
    batches = sv.text_batches(
        files["corpus"], parent.tokenizer, seq_len=SEQ_LEN, batch_size=BATCH_SIZE, split="train", max_batches=5
    )
    expected = sv.add_taylor(
        sv.profile(parent, batches, max_tokens=100, progress=False), parent, batches, max_tokens=100, progress=False
    )
    vit = sv.load_parent(tiny_model("vit"), device="cpu")
    vit_expected = sv.add_taylor(
        sv.profile(vit, tiny_batches("vit", count=5), max_tokens=100, progress=False),
        vit,
        tiny_batches("vit", count=5),
        max_tokens=100,
        progress=False,
    )
    assert float(expected.stats["taylor_tokens"]) == 128 and float(vit_expected.stats["taylor_tokens"]) == 102
    for record in records:
        for name in ("taylor_residual", "taylor_ffn", "taylor_attn", "taylor_tokens"):
            np.testing.assert_allclose(record["taylor"][name], expected.stats[name], rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(record["vit_taylor"][name], vit_expected.stats[name], rtol=1e-5, atol=1e-9)
        assert record["taylor_shard_tokens"] == expected.shards["taylor_tokens"].tolist()


def test_profile_save_writes_one_file_and_every_rank_returns_its_path(ranks, single):
    records, out = ranks
    assert sorted(p.name for p in out.iterdir()) == ["comparison", "profile.npz", "rank0.json", "rank1.json"]
    assert records[0]["saved"] == records[1]["saved"] == str(out / "profile.npz")
    assert records[0]["refused"] == records[1]["refused"] and "overwrite=True" in records[1]["refused"]
    saved = sv.Profile.load(out / "profile.npz")
    np.testing.assert_allclose(saved.residual_abs_sums, single["profile"].residual_abs_sums, rtol=1e-5)


def test_evaluate_and_block_ablation_equal_one_process_on_every_rank(ranks, single):
    records, _ = ranks
    for record in records:
        assert record["batches"] == single["evaluation"].batches == 3
        assert record["loss"] == pytest.approx(single["evaluation"].loss, rel=1e-6)
        ablation = single["ablation"]
        assert record["ablation"]["baseline"] == pytest.approx(ablation.baseline, rel=1e-6)
        assert record["ablation"]["removed"] == pytest.approx(ablation.removed, rel=1e-6)
        assert record["ablation"]["duplicated"] == pytest.approx(ablation.duplicated, rel=1e-6)


def test_ddp_training_agrees_across_ranks_and_resumes_from_a_checkpoint_exactly(ranks, files):
    records, _ = ranks
    assert all(r["train_processes"] == 2 for r in records)
    assert records[0]["train"] == records[1]["train"]  # step losses are reduced, evaluations sharded and reduced
    train = records[0]["train"]
    assert records[0]["stopped"] and max(step for step, _, _ in train["first"]) == 2
    # The resumed run continues the stopped one's history to exactly what an uninterrupted run records.
    np.testing.assert_allclose(train["resumed"], train["full"], rtol=1e-6)
    assert [p.name for p in (files["root"] / "checkpoints").iterdir()] == ["step-00000004"]
    # seen counts both processes' batches: 2 batches of 2 x 16 tokens per step.
    assert [seen for step, seen, _ in train["full"] if step == 1][0] == 64


def test_compare_histories_agree_across_ranks_and_are_saved_once(ranks):
    records, out = ranks
    assert records[0]["saved_comparison"] == records[1]["saved_comparison"] == str(out / "comparison")
    for history in (records[0]["comparison"], records[1]["comparison"]):
        for run in history.values():
            for record in run["steps"] + run["evals"]:
                record.pop("time")  # wall time is each process's own
    assert records[0]["comparison"] == records[1]["comparison"]
    saved = sv.Comparison.load(out / "comparison")
    assert [r.loss for r in saved.histories["subclone"].evals] == [
        r["loss"] for r in records[0]["comparison"]["subclone"]["evals"]
    ]


def test_cli_compare_exits_0_on_every_rank_prints_one_document_and_writes_one_directory(files, tmp_path):
    profile_path = tmp_path / "p.npz"
    assert main(["profile", *text_args(files), "--tokens", "64", "--out", str(profile_path)]) == 0
    out = tmp_path / "runs"
    done = launch(
        "-m",
        "subclone_viz",
        "compare",
        *text_args(files),
        "--profile",
        str(profile_path),
        "--layers",
        "2",
        "--hidden",
        "24",
        "--ffn",
        "40",
        "--heads",
        "3",
        "--kv-heads",
        "1",
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--eval-tokens",
        "96",
        "--out",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]  # the launcher fails if any rank exits non-zero
    document = json.loads(done.stdout)  # one document: only the main process printed
    assert document["output"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz", "runs"]  # no staging directory left
    assert sorted(p.name for p in out.iterdir()) == sorted(document["files"])
    summary = json.loads((out / "summary.json").read_text())
    assert all(row["steps"] == 2 for row in summary["table"])
    assert done.stderr.count("training random, subclone") == 1  # notes come from the main process only


def test_cli_profile_writes_one_file_equal_to_one_process(files, tmp_path):
    out = tmp_path / "two"
    out.mkdir()
    done = launch(
        "-m",
        "subclone_viz",
        "profile",
        *text_args(files),
        "--tokens",
        "160",
        "--out",
        str(out / "p.npz"),
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    document = json.loads(done.stdout)  # one JSON document: only the main process printed
    assert document["output"] == str(out / "p.npz")
    assert [p.name for p in out.iterdir()] == ["p.npz"]
    assert main(["profile", *text_args(files), "--tokens", "160", "--out", str(tmp_path / "one.npz")]) == 0
    two, one = sv.Profile.load(out / "p.npz"), sv.Profile.load(tmp_path / "one.npz")
    assert two.tokens == one.tokens == document["tokens"] == 160  # 5 batches of 2 x 16
    for name in ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums"):
        np.testing.assert_allclose(getattr(two, name), getattr(one, name), rtol=1e-5, atol=1e-8)


def test_profiles_of_shards_add_up_with_sum():
    parent = sv.load_parent(tiny_model("llama"), device="cpu")
    batches = tiny_batches("llama", count=4)
    whole = sv.profile(parent, batches, progress=False)
    parts = sum(sv.profile(parent, [batch], progress=False) for batch in batches)
    assert parts.tokens == whole.tokens
    np.testing.assert_allclose(parts.residual_abs_sums, whole.residual_abs_sums, rtol=1e-10)


@pytest.mark.slow
def test_smollm2_with_a_device_map_offloads_blocks_and_profiles_and_subclones_like_the_whole_parent(smollm2, tmp_path):
    blocks = {f"model.layers.{i}": "disk" if 10 <= i < 20 else "cpu" for i in range(30)}
    device_map = {
        "model.embed_tokens": "cpu",
        **blocks,
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    dispatched = sv.load_parent("smollm2-135m", device_map=device_map, offload_folder=tmp_path / "offload")
    assert dispatched.model.hf_device_map == device_map  # the alias no longer drops the map
    assert dispatched.model.model.layers[15].mlp.up_proj.weight.device.type == "meta"
    batches = sv.text_batches("builtin", smollm2.tokenizer, seq_len=64, batch_size=2, split="heldout", max_batches=2)
    a = sv.profile(dispatched, batches, progress=False)
    b = sv.profile(smollm2, batches, progress=False)
    np.testing.assert_allclose(a.block_sums, b.block_sums, rtol=1e-5)
    np.testing.assert_allclose(a.ffn_abs_sums, b.ffn_abs_sums, rtol=1e-5)
    spec = sv.DestinationSpec(layers=20, hidden=384)
    child = sv.subclone(dispatched, sv.plan(dispatched, b, spec))
    reference = sv.subclone(smollm2, sv.plan(smollm2, b, spec)).state_dict()
    assert {p.device.type for p in child.parameters()} == {"cpu"}
    for name, value in child.state_dict().items():
        torch.testing.assert_close(value, reference[name], msg=name)
