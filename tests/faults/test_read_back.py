"""Files read back (plans, training histories, comparisons, checkpoints) and caches filled by two writers at
once: a damaged or hand-edited file is one error naming it; concurrent writers never mix their outputs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import subclone_viz as sv
from subclone_viz import _atomic
from subclone_viz._atomic import DamagedFileError, OutputExistsError
from subclone_viz.compare import Comparison
from subclone_viz.plan import DestinationSpec, SubclonePlan
from subclone_viz.train import EvalRecord, History, StepRecord
from faultkit import leftovers
from tiny import WORDS, tiny_model, word_tokenizer

ONE_TORCH_THREAD = True


@pytest.fixture(scope="module")
def llama():
    return sv.load_parent(tiny_model("llama"), device="cpu", processor=word_tokenizer())


def _plan(llama) -> SubclonePlan:
    return sv.plan(llama, None, DestinationSpec(layers=3, hidden=24, heads=3, kv_heads=1), width="uniform")


PLAN_EDITS = {
    "a block index beyond the parent": (lambda d: d["layers"].__setitem__(0, 99), "layers"),
    "a residual index dropped": (lambda d: d["residual"].pop(), "residual indices"),
    "an FFN list too short": (lambda d: d["ffn"][1].pop(), "ffn indices"),
    "a field missing": (lambda d: d.pop("kv_heads"), "missing ['kv_heads']"),
    "an unknown field": (lambda d: d.update(colour="red"), "unknown ['colour']"),
}


@pytest.mark.parametrize("case", sorted(PLAN_EDITS))
def test_a_hand_edited_plan_is_refused_saying_what_is_wrong(llama, case):
    edit, fragment = PLAN_EDITS[case]
    plan = _plan(llama)
    assert SubclonePlan.from_dict(json.loads(json.dumps(plan.to_document()))) == plan
    data = json.loads(json.dumps(plan.to_document()))
    edit(data)
    with pytest.raises(ValueError, match="plan") as raised:
        SubclonePlan.from_dict(data)
    assert fragment in str(raised.value)


def _history(label: str) -> History:
    return History(
        label=label,
        steps=[StepRecord(step=1, seen=16, loss=2.0, lr=1e-3, time=0.1)],
        evals=[EvalRecord(step=1, seen=16, loss=2.5, accuracy=None, time=0.1)],
    )


def test_a_damaged_history_file_is_named(tmp_path):
    path = _history("a").save(tmp_path / "history.json")
    assert History.load(path).evals[0].loss == 2.5
    for text, fragment in [
        ('{"steps": [', "not valid JSON"),
        ("[1]", "JSON list"),
        ('{"steps": [{"step": 1}]}', "not a training history"),
        ('{"colour": 1}', "not a training history"),
        ('{"format": "subclone_viz.history", "version": 7}', "version 7"),
    ]:
        path.write_text(text)
        with pytest.raises(DamagedFileError, match=fragment) as raised:
            History.load(path)
        assert str(path) in str(raised.value)


def test_a_damaged_comparison_directory_is_named(tmp_path):
    comparison = Comparison(
        histories={"random": _history("random")}, plans={}, metrics={}, config={}, stopped_early=False
    )
    directory = comparison.save(tmp_path / "run")
    assert Comparison.load(directory).histories["random"].steps[0].loss == 2.0
    (directory / "summary.json").write_text('{"plans": {}}')
    with pytest.raises(DamagedFileError, match="summary.json: a comparison lacks metrics, config, stopped_early"):
        Comparison.load(directory)
    (directory / "summary.json").unlink()
    with pytest.raises(DamagedFileError, match="summary.json is missing"):
        Comparison.load(directory)


def test_two_processes_saving_one_destination_never_mix(llama, tmp_path, monkeypatch):
    """Issue 10, case 1: two save_destination calls without overwrite, released at the same moment."""
    barrier = threading.Barrier(2, timeout=60)
    real_fault = _atomic._fault

    def wait_for_both(point: str, target: Path) -> None:
        if point == "staged":
            barrier.wait()
        real_fault(point, target)

    monkeypatch.setattr(_atomic, "_fault", wait_for_both)
    children = [sv.subclone(llama, _plan(llama)) for _ in range(2)]
    with __import__("torch").no_grad():
        children[1].model.embed_tokens.weight.add_(1.0)  # tell the two apart
    outcomes: list[BaseException | None] = [None, None]

    def save(i: int) -> None:
        try:
            sv.save_destination(children[i], _plan(llama), tmp_path / "X")
        except BaseException as error:  # noqa: BLE001 - recorded for the assertions
            outcomes[i] = error

    threads = [threading.Thread(target=save, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(type(o).__name__ for o in outcomes if o is not None) == ["OutputExistsError"]
    assert all(isinstance(o, OutputExistsError) for o in outcomes if o is not None)
    winner = outcomes.index(None)
    saved = sv.load_parent(str(tmp_path / "X"), device="cpu").model
    expected = children[winner].model.embed_tokens.weight
    assert bool((saved.model.embed_tokens.weight == expected).all())
    assert leftovers(tmp_path) == []


def test_two_processes_filling_one_token_cache_tokenize_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(WORDS[i % 20] for i in range(2000)))
    tokenizer = word_tokenizer()
    calls = []
    real_call = type(tokenizer).__call__

    def slow_call(self, *args, **kwargs):
        calls.append(1)
        __import__("time").sleep(0.3)  # the second filler arrives while the first one tokenizes
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", slow_call)
    results = [None, None]

    def fill(i: int) -> None:
        results[i] = next(iter(sv.text_batches(corpus, tokenizer, seq_len=8, batch_size=2)))["input_ids"]

    threads = [threading.Thread(target=fill, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and bool((results[0] == results[1]).all())
