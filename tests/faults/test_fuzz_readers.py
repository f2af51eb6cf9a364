"""Every kind of file the library reads, damaged at random: each read ends in the file's contents, whole, or in
one UserError naming the file; a cache is rebuilt with one warning line instead.

The kinds are the library's registry of readers (subclone_viz.readers.READERS) and of records
(subclone_viz.records.RECORDS): a kind registered without a case in CASES fails
test_every_registered_file_kind_has_a_fuzz_case. A valid file of each kind is made once from tiny random models
(fuzzkit.py); every example damages a fresh copy (truncated at a byte, bytes flipped, emptied, replaced by another
kind or by a directory; for directory kinds the same to one of their files, a file removed, the directory
replaced). Examples are drawn from a fixed seed, a fixed number per kind (fuzzkit.FUZZ).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fuzzkit import FUZZ, Damage, WarningLines, apply, copy_valid, damages, files_of, write_tiny_gguf
from hypothesis import given, settings

import subclone_viz as sv
from subclone_viz import parent as parent_module
from subclone_viz import shipped, vision
from subclone_viz.budget import BudgetGrid, budget_grid
from subclone_viz.cli import main
from subclone_viz.errors import UserError
from subclone_viz.export import read_subclone_record
from subclone_viz.forecast import DEFAULT_PRIOR, ForecastPrior
from subclone_viz.plan import DestinationSpec, SubclonePlan
from subclone_viz.readers import READERS, register_reader
from subclone_viz.records import RECORDS, Record
from faultkit import assert_one_line_error
from tiny import WORDS, tiny_batches, tiny_model, word_tokenizer

ONE_TORCH_THREAD = True
ALIAS = "fuzz-tiny-gguf"  # an embedded GGUF parent whose file is the tiny GGUF below


@dataclass(frozen=True)
class Kit:
    """What the valid files are made from: a tiny Llama parent saved with its tokenizer, batches and a corpus."""

    root: Path
    parent_dir: Path
    corpus: Path
    gguf: Path

    def parent(self) -> sv.Parent:
        return sv.load_parent(str(self.parent_dir), device="cpu")

    def batches(self, count: int = 2) -> list:
        return tiny_batches("llama", count=count, seq_len=8)


class _TinyEmbedded(parent_module.EmbeddedGGUF):
    def locate(self, scratch: Path) -> Path:
        return Path(os.environ["SUBCLONE_VIZ_FUZZ_GGUF"])


@contextmanager
def cache_at(directory: Path, kit: Kit) -> Iterator[None]:
    """The library's cache in ``directory``; the tiny GGUF registered as an embedded parent; the digits ViT
    trained by a two-step recipe of a one-block model, so that its cache is rebuilt in a second."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUBCLONE_VIZ_CACHE", str(directory))
        patch.setenv("SUBCLONE_VIZ_FUZZ_GGUF", str(kit.gguf))
        patch.setitem(
            parent_module.GGUF_PARENTS,
            ALIAS,
            _TinyEmbedded(
                packages=("none",),
                gguf_file="model.gguf",
                base_model="tiny/llama",
                license="apache-2.0",
                license_terms="-",
                quantization="F32",
            ),
        )
        patch.setitem(parent_module.EMBEDDED_ALIASES, ALIAS, "the fuzz suite's tiny GGUF")
        patch.setattr(vision, "_RECIPE", dict(steps=2, batch_size=16, lr=2e-3, weight_decay=0.05, seed=0, eval_every=1))
        patch.setattr(
            vision,
            "_MODEL_ARGS",
            dict(img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=1, num_heads=2),
        )
        yield


# ------------------------------------------------------------------------------------------- valid files


def _plan(kit: Kit) -> SubclonePlan:
    return sv.plan(kit.parent(), None, DestinationSpec(layers=2, hidden=24, heads=3, kv_heads=1), width="uniform")


def _make_destination(kit: Kit, directory: Path) -> Path:
    parent = kit.parent()
    parent.info.update(base_model="tiny/llama", license="apache-2.0")  # the card then states a provenance
    plan = sv.plan(parent, None, DestinationSpec(layers=2, hidden=24, heads=3, kv_heads=1), width="uniform")
    return sv.save_destination(sv.subclone(parent, plan), plan, directory / "destination")


def _train(kit: Kit, checkpoints: Path | None = None, resume: bool = False, steps: int = 2) -> sv.History:
    torch.manual_seed(0)
    return sv.train(
        tiny_model("llama"),
        kit.batches(),
        steps=steps,
        lr=1e-3,
        weight_decay=0.0,
        eval_every=1,
        eval_batches=kit.batches(1),
        checkpoint_dir=checkpoints,
        resume=resume,
        progress=False,
        label="random",
    )


def _make_comparison(kit: Kit, directory: Path) -> Path:
    history = _train(kit)
    comparison = sv.Comparison(
        histories={"random": history, "subclone": history},
        plans={"random": None},
        metrics={"random": {"final_loss": history.evals[-1].loss}},
        config={"steps": 2},
    )
    return comparison.save(directory / "comparison")


def _make_study(kit: Kit, directory: Path) -> Path:
    study = sv.speedup_study(
        kit.parent(),
        [DestinationSpec(layers=2, hidden=24, heads=3, kv_heads=1)],
        kit.batches(),
        kit.batches(1),
        random_lrs=[1e-3],
        subclone_lrs=[1e-3],
        steps=2,
        eval_every=1,
        progress=False,
    )
    return study.save(directory / "study.json")


def _grid(kit: Kit) -> sv.SizeGrid:
    return sv.size_grid(kit.parent(), None, [2], [24], kit.batches(1), width="uniform", progress=False)


def _token_ids(kit: Kit) -> np.ndarray:
    batches = sv.text_batches(kit.corpus, word_tokenizer(), seq_len=8, batch_size=2)
    return np.concatenate([batch["input_ids"].numpy().ravel() for batch in batches])


def _only(directory: Path, pattern: str) -> Path:
    [found] = sorted(directory.glob(pattern))
    return found


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ours, theirs = a.state_dict(), b.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


# ----------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """How the suite fuzzes one file kind.

    make: writes a valid file under a directory (the library's cache when the kind is a cache) and returns it.
    whole: asserts that what a read returned is whole, given what the valid file reads as.
    use: the library's own use of the file beyond its reader (a cache rebuilt, a checkpoint resumed), or None.
    same: asserts that ``use`` gave what it gives on the valid file.
    """

    make: Callable[[Kit, Path], Path]
    whole: Callable[[Any, Any], None]
    examples: int = 15
    use: Callable[[Kit], Any] | None = None
    same: Callable[[Any, Any], None] | None = None


def _is(kind: type) -> Callable[[Any, Any], None]:
    def whole(result: Any, valid: Any) -> None:
        assert isinstance(result, kind), result

    return whole


def _same_model(result: Any, valid: Any) -> None:
    _same_weights(
        result[0] if isinstance(result, tuple) else result.model, valid[0] if isinstance(valid, tuple) else valid.model
    )


def _equal(result: Any, valid: Any) -> None:
    assert type(result) is type(valid)
    assert np.array_equal(result, valid) if isinstance(valid, np.ndarray) else result == valid


def _whole_parent(result: Any, valid: Any) -> None:
    """A parent whose weights may differ (a flipped byte of a tensor) but none missing or reshaped."""
    assert isinstance(result, sv.Parent)
    ours, theirs = result.model.state_dict(), valid.model.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert (result.tokenizer is None) == (valid.tokenizer is None)


def _whole_record(result: Any, valid: Any) -> None:
    assert isinstance(result["plan"], SubclonePlan) and result.keys() == valid.keys()


def _whole_card(result: Any, valid: Any) -> None:
    assert isinstance(result, dict) and all(isinstance(v, str) for v in result.values())


def _whole_checkpoint(result: Any, valid: Any) -> None:
    history, step = result
    assert isinstance(history, sv.History) and step == valid[1]


def _same_history(result: Any, valid: Any) -> None:
    assert [r.loss for r in result.steps] == [r.loss for r in valid.steps]


def _make_parent_cache(kit: Kit, directory: Path) -> Path:
    sv.load_parent(ALIAS, device="cpu")
    return directory / "parents" / ALIAS


def _make_vit_cache(kit: Kit, directory: Path) -> Path:
    vision.load_vit_digits(progress=False)
    return vision.vit_digits_dir()


def _make_grid_cell(kit: Kit, directory: Path) -> Path:
    _grid(kit)
    return _only(directory / "size_grid", "*.json")


def _make_token_cache(kit: Kit, directory: Path) -> Path:
    _token_ids(kit)
    return _only(directory / "tokens", "*.npy")


def _make_checkpoint(kit: Kit, directory: Path) -> Path:
    _train(kit, directory / "checkpoints")
    return directory / "checkpoints" / "step-00000002"


def _resume(kit: Kit) -> sv.History:
    return _train(kit, Path(os.environ["SUBCLONE_VIZ_CACHE"]) / "checkpoints", resume=True)


def _make_similarity(kit: Kit, directory: Path) -> Path:
    parent = kit.parent()
    plan = _plan(kit)
    return sv.layer_similarity(parent, sv.subclone(parent, plan), plan, kit.batches(1)).save(directory / "sim.json")


def _shipped_parent() -> sv.Parent:
    """A tiny Llama loaded from memory: its name is a plain one, as an embedded parent's is."""
    return sv.load_parent(tiny_model("llama"), device="cpu")


def _make_shipped(kit: Kit, directory: Path) -> Path:
    parent = _shipped_parent()
    batches = kit.batches()
    made = {"command": "fuzz", "profile": "2 tiny batches", "ablation": "2 tiny batches"}
    shipped.save_shipped(
        parent,
        sv.profile(parent, batches, progress=False),
        sv.block_ablation(parent, batches, progress=False),
        made,
        directory=directory,
    )
    return directory / f"{parent.name}.json"


def _load_shipped(kit: Kit) -> shipped.ShippedFigures:
    return shipped.load_shipped(_shipped_parent().name, Path(os.environ["SUBCLONE_VIZ_CACHE"]))


def _curve() -> sv.LearningCurve:
    """A synthetic run of 200 steps under a cosine schedule, evaluated every 10 steps for its first 60."""
    lrs = [1e-3 * (0.55 + 0.45 * np.cos(np.pi * i / 200)) for i in range(200)]
    steps = list(range(0, 70, 10))
    return sv.LearningCurve(steps, [4.0 + 6.0 / (1 + s) ** 0.3 for s in steps], lrs)


def _budget(kit: Kit) -> "BudgetGrid":
    parent, batches = kit.parent(), kit.batches()
    first = batches[0]
    tokens_per_step = int(first["attention_mask"].sum()) if "attention_mask" in first else first["input_ids"].numel()
    return budget_grid(
        parent,
        sv.profile(parent, batches, progress=False),
        [2],
        [24],
        batches,
        kit.batches(1),
        tokens=tokens_per_step * 24,
        prior=ForecastPrior(C=0.05, decay=0.9, C_spread=0.01, scale=1.5),
        progress=False,
    )


def _make_pilot(kit: Kit, directory: Path) -> Path:
    _budget(kit)
    return _only(directory / "budget_pilots", "*.json")


def _same_pilots(result: Any, valid: Any) -> None:
    [ours], [theirs] = result.cells, valid.cells
    assert ours["pilot"]["losses"] == pytest.approx(theirs["pilot"]["losses"])


def _whole_pilot(result: Any, valid: Any) -> None:
    assert result.keys() == {"key", "history"} and isinstance(result["history"], sv.History)


def _whole_shipped(result: Any, valid: Any) -> None:
    assert isinstance(result, shipped.ShippedFigures) and len(result.ablation.removed) == len(valid.ablation.removed)


def _same_shipped(result: Any, valid: Any) -> None:
    """The figures with their profile: a flipped character of free text or of a loss reads as another whole record."""
    _whole_shipped(result, valid)
    assert result.profile is not None and result.profile.num_layers == valid.profile.num_layers


# One case per registered file kind: a READERS name, or a record's FORMAT (read by its class's load).
CASES: dict[str, Case] = {
    "gguf": Case(lambda kit, d: copy_valid(kit.gguf, d / "model.gguf"), _whole_parent, examples=30),
    "parent-cache": Case(
        _make_parent_cache,
        _same_model,
        examples=12,
        use=lambda kit: sv.load_parent(ALIAS, device="cpu"),
        same=_same_model,
    ),
    "vit-digits-cache": Case(
        _make_vit_cache,
        _same_model,
        examples=10,
        use=lambda kit: vision.load_vit_digits(progress=False),
        same=_same_model,
    ),
    "model-directory": Case(_make_destination, _whole_parent, examples=25),
    "model-card": Case(
        lambda kit, d: copy_valid(_make_destination(kit, d) / "README.md", d / "README.md"), _whole_card
    ),
    "subclone-record": Case(
        lambda kit, d: copy_valid(_make_destination(kit, d) / "subclone.json", d / "subclone.json"), _whole_record
    ),
    "subclone_viz.profile": Case(
        lambda kit, d: sv.profile(kit.parent(), kit.batches(), progress=False).save(d / "profile.npz"),
        _is(sv.Profile),
        examples=25,
    ),
    "subclone_viz.plan": Case(lambda kit, d: _plan(kit).save(d / "plan.json"), _is(SubclonePlan)),
    "subclone_viz.history": Case(lambda kit, d: _train(kit).save(d / "history.json"), _is(sv.History)),
    "subclone_viz.comparison": Case(_make_comparison, _is(sv.Comparison)),
    "subclone_viz.size_grid": Case(lambda kit, d: _grid(kit).save(d / "grid.json"), _is(sv.SizeGrid)),
    "subclone_viz.speedup_study": Case(_make_study, _is(sv.SpeedupStudy)),
    "size-grid-cell": Case(
        _make_grid_cell, _equal, use=_grid, same=lambda a, b: _equal(a.loss.tolist(), b.loss.tolist())
    ),
    "token-cache": Case(_make_token_cache, _equal, use=_token_ids, same=_equal),
    "checkpoint": Case(_make_checkpoint, _whole_checkpoint, examples=12, use=_resume, same=_same_history),
    "budget-pilot": Case(_make_pilot, _whole_pilot, examples=10, use=_budget, same=_same_pilots),
    "subclone_viz.generations": Case(
        lambda kit, d: sv.generate({"parent": kit.parent()}, "w1 w2", 4).save(d / "generations.json"),
        _is(sv.Generations),
        examples=10,
    ),
    "subclone_viz.token_losses": Case(
        lambda kit, d: sv.token_losses({"parent": kit.parent()}, kit.batches(1)[0]).save(d / "losses.json"),
        _is(sv.TokenLosses),
        examples=10,
    ),
    "subclone_viz.logit_lens": Case(
        lambda kit, d: sv.logit_lens(kit.parent(), None, kit.batches(1)[0], top_k=3).save(d / "lens.json"),
        _is(sv.LogitLens),
        examples=10,
    ),
    "subclone_viz.layer_similarity": Case(_make_similarity, _is(sv.LayerSimilarity), examples=10),
    "subclone_viz.shipped_figures": Case(
        _make_shipped, _whole_shipped, examples=10, use=_load_shipped, same=_same_shipped
    ),
    "subclone_viz.forecast": Case(
        lambda kit, d: sv.forecast(_curve(), steps=200).save(d / "forecast.json"), _is(sv.Forecast), examples=10
    ),
    "subclone_viz.forecast_prior": Case(
        lambda kit, d: DEFAULT_PRIOR.save(d / "prior.json"), _is(ForecastPrior), examples=10
    ),
    "subclone_viz.budget_grid": Case(lambda kit, d: _budget(kit).save(d / "budget.json"), _is(BudgetGrid), examples=10),
}


def read_with(kind: str, path: Path) -> Any:
    """Read ``path`` with the registered reader of ``kind``: a READERS entry, or a record format's ``load``."""
    return READERS[kind].read(path) if kind in READERS else RECORDS[kind].load(path)


@dataclass
class Valid:
    """A kind's valid file: the directory holding it (the cache for caches), its path, what it reads as and
    what the library's use of it gives."""

    home: Path
    path: Path
    read: Any
    used: Any


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("fuzz")
    parent_dir = root / "llama"
    tiny_model("llama").save_pretrained(parent_dir)
    word_tokenizer().save_pretrained(parent_dir)
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(400)))
    gguf = write_tiny_gguf(tiny_model("llama"), WORDS, root / "tiny.gguf")
    return Kit(root=root, parent_dir=parent_dir, corpus=corpus, gguf=gguf)


_VALID: dict[str, Valid] = {}


def valid(kind: str, kit: Kit) -> Valid:
    """The valid file of ``kind``, made on first use (each kind's own home, so that caches do not mix)."""
    if kind not in _VALID:
        home = kit.root / "valid" / kind
        home.mkdir(parents=True)
        case = CASES[kind]
        with cache_at(home, kit):
            path = Path(case.make(kit, home))
            read = read_with(kind, path)
        used = None
        if case.use is not None:  # on a copy: resuming a checkpoint replaces it
            with (
                tempfile.TemporaryDirectory(dir=kit.root) as scratch,
                cache_at(copy_valid(home, Path(scratch) / "h"), kit),
            ):
                used = case.use(kit)
        _VALID[kind] = Valid(home, path, read, used)
    return _VALID[kind]


def other_files(kit: Kit, kind: str) -> dict[str, Path]:
    """One file of every other kind made so far (a directory kind's largest file), to put in a file's place."""
    found = {}
    for name in (
        "gguf",
        "subclone_viz.profile",
        "subclone_viz.history",
        "subclone-record",
        "token-cache",
        "subclone_viz.speedup_study",
    ):
        if name != kind:
            path = valid(name, kit).path
            found[name] = path if path.is_file() else max(path.rglob("*"), key=lambda p: p.stat().st_size)
    return found


# ----------------------------------------------------------------------------------------------- checks


def _outcome(read: Callable[[], Any], named: Path) -> tuple[str, Any]:
    """("read", result) or ("refused", message); anything but a UserError naming ``named`` fails the test."""
    try:
        return "read", read()
    except UserError as error:
        message = str(error)
        assert str(named) in message, f"the error does not name {named}: {message}"
        return "refused", message
    except Exception as error:  # noqa: BLE001 - the finding: shown with its traceback
        pytest.fail(f"{type(error).__name__} instead of a UserError naming {named}:\n{traceback.format_exc()}")


def check_damaged_copy(kind: str, kit: Kit, damage: Damage) -> None:
    case, good = CASES[kind], valid(kind, kit)
    with tempfile.TemporaryDirectory(dir=kit.root) as scratch:
        home = copy_valid(good.home, Path(scratch) / "home")
        target = home / good.path.relative_to(good.home)
        apply(damage, target, other_files(kit, kind))
        with cache_at(home, kit), WarningLines() as warnings:
            status, result = _outcome(lambda: read_with(kind, target), target)
            if status == "read":
                case.whole(result, good.read)
            assert not warnings.lines, warnings.lines  # a reader only reads: the rebuild is its caller's
            if case.use is None:
                return
            used, result = _outcome(lambda: case.use(kit), target)
        if used == "read":
            case.same(result, good.used)
        if kind in READERS and READERS[kind].cache:
            # A refused cache is rebuilt with one warning line naming it (or, when something else is in its
            # place, ends in one error naming it); a cache the reader accepted is used as it is, silently.
            expected = {0} if status == "read" else {1} if used == "read" else {0, 1}
            assert len(warnings.lines) in expected, warnings.lines
            assert all(str(target) in line for line in warnings.lines), warnings.lines


def fuzz_kind(kind: str, kit: Kit, examples: int) -> None:
    good = valid(kind, kit)
    strategy = damages(files_of(good.path), good.path.is_dir(), sorted(other_files(kit, kind)))

    @settings(FUZZ, max_examples=examples)
    @given(damage=strategy)
    def damaged(damage: Damage) -> None:
        check_damaged_copy(kind, kit, damage)

    damaged()


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_damaged_file_is_read_whole_or_refused_naming_it(kind, kit):
    fuzz_kind(kind, kit, CASES[kind].examples)


def _number_paths(data: Any, where: tuple = ()) -> Iterator[tuple]:
    """Where a JSON document holds a number (booleans are not numbers here), depth first."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _number_paths(value, (*where, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _number_paths(value, (*where, index))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield where


def _replaced(data: Any, where: tuple, value: Any) -> Any:
    if not where:
        return value
    copy = list(data) if isinstance(data, list) else dict(data)
    copy[where[0]] = _replaced(data[where[0]], where[1:], value)
    return copy


JSON_RECORDS = sorted(kind for kind in CASES if kind in RECORDS and RECORDS[kind].load.__func__ is Record.load.__func__)


@pytest.mark.parametrize("kind", JSON_RECORDS)
def test_a_record_with_a_number_out_of_range_is_read_whole_or_refused_naming_it(kind, kit):
    """A number too large for its field (1e400 reads as infinity), in each of a record's first 40 numbers: byte
    damage seldom makes one, a hand edit or another writer may."""
    good = valid(kind, kit)
    data = json.loads(good.path.read_text())
    for where in itertools.islice(_number_paths(data), 40):
        with tempfile.TemporaryDirectory(dir=kit.root) as scratch:
            target = Path(scratch) / good.path.name
            target.write_text(json.dumps(_replaced(data, where, math.inf)))
            status, result = _outcome(lambda: read_with(kind, target), target)
            if status == "read":
                CASES[kind].whole(result, good.read)


def registered_kinds() -> set[str]:
    return set(READERS) | set(RECORDS)


def test_every_registered_file_kind_has_a_fuzz_case():
    assert sorted(registered_kinds() - set(CASES)) == [], "file kinds registered without a fuzz case in CASES"
    assert sorted(set(CASES) - registered_kinds()) == [], "fuzz cases of file kinds nobody registered"


def test_a_reader_registered_without_a_fuzz_case_is_noticed():
    register_reader("fuzz-suite-new-kind", read_subclone_record, "a kind nobody fuzzes yet")
    try:
        assert "fuzz-suite-new-kind" in registered_kinds() - set(CASES)
    finally:
        READERS.unregister("fuzz-suite-new-kind")


# ------------------------------------------------------------------------------------------------- CLI

CLI_KINDS = {
    "gguf": lambda path, out: ["info", "--parent", str(path)],
    "model-directory": lambda path, out: ["info", "--parent", str(path)],
    "subclone_viz.profile": lambda path, out: [
        "subclone",
        "--parent",
        str(out.parent / "llama"),
        "--data",
        str(out.parent / "c.txt"),
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--layers",
        "2",
        "--hidden",
        "24",
        "--heads",
        "3",
        "--kv-heads",
        "1",
        "--width",
        "importance",
        "--eval-tokens",
        "0",
        "--profile",
        str(path),
        "--out",
        str(out),
    ],
    "subclone_viz.speedup_study": lambda path, out: ["study", "--merge", str(path), "--out", str(out)],
}
# Damage that no reader can take for a valid file: the CLI must end in exit status 2 and one line naming it.
_SURE_DAMAGE = ("truncate", "empty", "other-kind", "directory", "whole-as-file", "whole-emptied")


@pytest.mark.parametrize("kind", sorted(CLI_KINDS))
def test_the_cli_refuses_a_damaged_file_in_one_line(kind, kit, capsys):
    good = valid(kind, kit)
    files = {
        name: size for name, size in files_of(good.path).items() if name in ("", "config.json", "model.safetensors")
    }  # what a model directory cannot do without
    strategy = damages(files, good.path.is_dir(), sorted(other_files(kit, kind))).filter(
        lambda damage: damage.how in _SURE_DAMAGE
    )

    @settings(FUZZ, max_examples=6)
    @given(damage=strategy)
    def damaged(damage: Damage) -> None:
        with tempfile.TemporaryDirectory(dir=kit.root) as scratch:
            target = copy_valid(good.path, Path(scratch) / good.path.name)
            shutil.copytree(kit.parent_dir, Path(scratch) / "llama")
            shutil.copy(kit.corpus, Path(scratch) / "c.txt")
            apply(damage, target, other_files(kit, kind))
            capsys.readouterr()
            code = main(CLI_KINDS[kind](target, Path(scratch) / "out"))
            captured = capsys.readouterr()
            assert_one_line_error(code, captured.out, captured.err, str(target))

    damaged()
