"""The command line under bad inputs and faults: every case ends in exit status 2 with one line on stderr, or
recovers (with one warning line) on the next run; nothing half-written is ever visible.

The cases of issue 10, each a test below: concurrent writers (test_writer.py), damaged caches, read-only
outputs, damaged or hand-edited profiles, image folders with too many classes or broken files, kill -9 while
converting, saving, profiling, comparing and writing the report, private permissions, ``--layers`` beyond the
advertised range, ``--out .``, a symlinked ``--out``, a garbage ``.gguf``, non-UTF-8 ``--data`` and ``--lr 0``.
Tiny random parents throughout; the one test that needs the real SmolLM2 conversion is marked slow.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from subclone_viz import cli_commands
from subclone_viz.cli import main
from subclone_viz.profile import Profile
from faultkit import (
    assert_late_error,
    assert_one_line_error,
    compare_args,
    leftovers,
    run_cli_subprocess,
    study_args,
    subclone_args,
    text_args,
)

ONE_TORCH_THREAD = True


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def saved_profile(parents, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "profile.npz"
    assert main(["profile", *text_args(parents), "--tokens", "64", "--out", str(path)]) == 0
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command loads its parent: the refusal must come before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the parent was loaded before the output location was checked")

    monkeypatch.setattr(cli_commands, "load_parent", refuse)


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("command", ["subclone", "profile", "compare", "study", "report", "grid"])
def test_a_read_only_output_is_refused_before_any_work(parents, read_only_dir, no_work, capsys, command):
    if command == "grid":
        argv = ["grid", *text_args(parents), "--budget-tokens", "1e6", "--out", str(read_only_dir / "X")]
    elif command == "subclone":
        argv = subclone_args(parents, read_only_dir / "X")
    elif command == "compare":
        argv = compare_args(parents, read_only_dir / "X")
    elif command == "study":
        argv = study_args(parents, read_only_dir / "X")
    elif command == "profile":
        argv = ["profile", *text_args(parents), "--out", str(read_only_dir / "p.npz")]
    else:
        argv = ["report", "--parent", str(parents["llama"]), "--out", str(read_only_dir / "r.html")]
    assert_one_line_error(*run(capsys, *argv), str(read_only_dir), "not writable")


def test_the_current_directory_as_out_is_refused(parents, tmp_path, monkeypatch, no_work, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    assert_one_line_error(*run(capsys, *subclone_args(parents, Path("."), "--overwrite")), "current directory")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_symlinked_out_is_replaced_where_it_points_without_leftovers(parents, tmp_path, capsys):
    real, link = tmp_path / "real", tmp_path / "link"
    assert run(capsys, *subclone_args(parents, real))[0] == 0
    link.symlink_to(real)
    assert run(capsys, *subclone_args(parents, link, "--overwrite"))[0] == 0
    assert link.is_symlink() and (link / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_saved_files_get_ordinary_permissions(parents, saved_profile, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert run(capsys, *subclone_args(parents, tmp_path / "X"))[0] == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "X").iterdir()}
    assert modes["model.safetensors"] == 0o644, modes
    assert set(modes.values()) == {0o644}
    assert (tmp_path / "X").stat().st_mode & 0o777 == 0o755
    assert saved_profile.stat().st_mode & 0o777 == 0o644


def test_a_full_disk_while_saving_is_one_line_and_leaves_nothing(parents, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUBCLONE_VIZ_FAULT", "staged:enospc")
    assert_late_error(*run(capsys, *subclone_args(parents, tmp_path / "X")), "No space left on device", "X")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ kill -9


@pytest.mark.parametrize("command", ["subclone", "profile", "compare", "study", "report"])
def test_a_run_killed_while_writing_leaves_nothing_visible_and_the_next_run_recovers(
    parents, tmp_path, capsys, caplog, command
):
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    if command == "subclone":
        out, argv, point = out_dir / "X", subclone_args(parents, out_dir / "X"), "staged"
    elif command == "compare":
        out, argv, point = out_dir / "X", compare_args(parents, out_dir / "X"), "staged"
    elif command == "study":
        out, argv, point = out_dir / "X", study_args(parents, out_dir / "X"), "staged"
    elif command == "profile":
        out, point = out_dir / "p.npz", "staged"
        argv = ["profile", *text_args(parents), "--tokens", "32", "--out", str(out)]
    else:
        out, point = out_dir / "r.html", "writing"  # half the page written
        argv = [
            "report",
            "--parent",
            str(parents["llama"]),
            "--data",
            str(parents["corpus"]),
            "--quick",
            "--steps",
            "0",
            "--out",
            str(out),
        ]
    killed = run_cli_subprocess(*argv, fault=f"{point}:kill", target=out.name)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not out.exists()  # nothing half-written is visible under the output's name
    assert len(leftovers(out_dir)) == 1  # the staging of the killed process, until the next run

    caplog.set_level(logging.WARNING, logger="subclone_viz")
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    assert out.exists() and leftovers(out_dir) == []
    assert "removed 1 leftover(s) of interrupted writes" in caplog.text


# ------------------------------------------------------------------------------------------------ profiles


def _drop_source(meta, arrays):
    del meta["source"]


PROFILE_DAMAGE = {
    "truncated": (lambda data: data[: len(data) // 2], "damaged or not a saved profile"),
    "byte-flipped": (
        lambda data: data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:],
        "damaged or not a saved profile",
    ),
    "not a zip": (lambda data: b"hello", "damaged or not a saved profile"),
}


@pytest.mark.parametrize("case", sorted(PROFILE_DAMAGE))
def test_a_damaged_profile_file_is_one_line_naming_it(parents, saved_profile, tmp_path, capsys, case):
    damage, message = PROFILE_DAMAGE[case]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(damage(saved_profile.read_bytes()))
    argv = subclone_args(parents, tmp_path / "X", "--width", "importance", "--profile", str(bad))
    line = assert_one_line_error(*run(capsys, *argv), str(bad))
    assert message in line or "profile" in line
    assert not (tmp_path / "X").exists()


def _set(key, value):
    def change(meta, arrays):
        meta[key] = value

    return change


def _array(name, transform):
    def change(meta, arrays):
        arrays[name] = transform(arrays[name])

    return change


HAND_EDITS = {
    "meta without source": (_drop_source, "no source"),
    "meta is a list": (lambda meta, arrays: arrays.update(meta=np.array("[1, 2]")), "a JSON list"),
    "meta not JSON": (lambda meta, arrays: arrays.update(meta=np.array("{oops")), "not JSON"),
    "tokens negative": (_set("tokens", -5), "tokens=-5"),
    "newer format": (_set("version", 99), "version 99"),
    "ffn of the wrong shape": (_array("ffn_abs_sums", lambda a: a[:, :-1]), "ffn_abs_sums"),
    "residual of the wrong rank": (_array("residual_abs_sums", lambda a: a.ravel()), "residual_abs_sums"),
    "full of NaN": (_array("block_sums", lambda a: np.full_like(a, np.nan)), "NaN"),
    "negative sums": (_array("attn_abs_sums", lambda a: -a), "negative"),
    "an array missing": (lambda meta, arrays: arrays.pop("attn_abs_sums"), "lacks attn_abs_sums"),
}


@pytest.mark.parametrize("case", sorted(HAND_EDITS))
def test_a_hand_edited_profile_is_one_line_naming_it_and_what_is_wrong(parents, saved_profile, tmp_path, capsys, case):
    change, fragment = HAND_EDITS[case]
    bad = tmp_path / "edited.npz"
    with np.load(saved_profile) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps(meta))
    change(meta, arrays)
    if case not in ("meta is a list", "meta not JSON", "an array missing"):
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(bad, **arrays)
    argv = subclone_args(parents, tmp_path / "X", "--width", "importance", "--profile", str(bad))
    assert_one_line_error(*run(capsys, *argv), str(bad), fragment)
    for command in (compare_args(parents, tmp_path / "Y", "--profile", str(bad)),):
        assert_one_line_error(*run(capsys, *command), str(bad), fragment)


def test_the_saved_profile_round_trips(saved_profile):
    profile = Profile.load(saved_profile)
    assert profile.tokens == 64 and profile.block_sums.shape == (4, 3)


# ------------------------------------------------------------------------------------------------ caches


def test_a_damaged_token_cache_is_rebuilt_with_one_warning(parents, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))
    argv = ["profile", *text_args(parents), "--tokens", "32", "--json"]
    code, first, _ = run(capsys, *argv)
    assert code == 0
    caches = sorted((tmp_path / "cache" / "tokens").glob("*.npy"))
    assert caches
    for path in caches:
        data = path.read_bytes()
        path.write_bytes(data[:-7])  # truncated
    caplog.set_level(logging.WARNING, logger="subclone_viz")
    code, second, _ = run(capsys, *argv)
    assert code == 0 and json.loads(second)["blocks"] == json.loads(first)["blocks"]
    assert [r.getMessage() for r in caplog.records if "rebuilding the cached token ids" in r.getMessage()]
    assert all("is truncated" in r.getMessage() for r in caplog.records if "token ids" in r.getMessage())
    caplog.clear()
    for path in caches:  # flipped bytes of the same length
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    code, third, _ = run(capsys, *argv)
    assert code == 0 and json.loads(third)["blocks"] == json.loads(first)["blocks"]
    assert any("checksum" in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert run(capsys, *argv)[0] == 0
    assert not caplog.records  # whole again: no more warnings


@pytest.mark.slow
def test_smollm2_conversion_killed_then_recovered_then_damaged_then_rebuilt(tmp_path, capsys, caplog, monkeypatch):
    """The one test of the real conversion (tens of seconds): a kill -9 just before the converted weights are
    published leaves only a staging directory, the next load removes it and converts; a flipped bit in the
    weights is noticed by their checksum and they are converted again, with one warning line."""
    from subclone_viz import parent as parent_module
    from subclone_viz._atomic import verify_manifest

    cache = tmp_path / "cache"
    killed = run_cli_subprocess(
        "info", "--parent", "smollm2-135m", fault="staged:kill", target="smollm2-135m", cache=cache, timeout=600
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    parents_dir = cache / "parents"
    assert not (parents_dir / "smollm2-135m").exists() and len(leftovers(parents_dir)) == 1

    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(cache))
    caplog.set_level(logging.WARNING, logger="subclone_viz")
    code, out, err = run(capsys, "info", "--parent", "smollm2-135m")
    assert code == 0, err
    assert leftovers(parents_dir) == [] and "removed 1 leftover(s)" in caplog.text

    weights = parents_dir / "smollm2-135m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the weights
    weights.write_bytes(bytes(data))
    conversions = []
    real_convert = parent_module._convert_gguf
    monkeypatch.setattr(parent_module, "_convert_gguf", lambda *a: (conversions.append(a), real_convert(*a)))
    caplog.clear()
    code, _, err = run(capsys, "info", "--parent", "smollm2-135m")
    assert code == 0, err
    assert len(conversions) == 1
    assert "model.safetensors does not match the checksum" in caplog.text and "rebuilding" in caplog.text
    assert verify_manifest(weights.parent) is None  # whole again (truncation: tests/faults/test_writer.py)


# ------------------------------------------------------------------------------------------------ inputs


def _image_folder(root: Path, classes: int, per_class: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_an_image_folder_with_more_classes_than_the_parent_is_one_line(parents, tmp_path, capsys):
    folder = _image_folder(tmp_path / "five", 5)
    argv = [
        "compare",
        "--parent",
        str(parents["vit3"]),
        "--data",
        str(folder),
        "--layers",
        "2",
        "--hidden",
        "16",
        "--inits",
        "random",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "X"),
    ]
    assert_one_line_error(*run(capsys, *argv), "5 classes", "predicts 3")


def test_unreadable_images_are_skipped_with_one_warning_naming_them(parents, tmp_path, capsys, caplog):
    folder = _image_folder(tmp_path / "three", 3)
    for i in range(12):
        (folder / "class1" / f"broken{i}.png").write_bytes(b"not an image at all")
    caplog.set_level(logging.WARNING, logger="subclone_viz")
    argv = [
        "compare",
        "--parent",
        str(parents["vit3"]),
        "--data",
        str(folder),
        "--layers",
        "2",
        "--hidden",
        "16",
        "--inits",
        "random",
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "X"),
    ]
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if "unreadable image" in r.getMessage()]
    assert warnings and all("class1/broken" in w for w in warnings)


def test_layers_beyond_the_advertised_range_are_one_line(parents, tmp_path, no_work, capsys, monkeypatch):
    monkeypatch.undo()  # this one needs the parent to know its depth
    assert_one_line_error(
        *run(capsys, *subclone_args(parents, tmp_path / "X", "--layers", "1000")), "layers=1000", "1 <= layers <= 8"
    )
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize(
    "config",
    [
        "[30, 576]",
        '{"num_hidden_layers": "30", "hidden_size": 576}',
        '{"num_hidden_layers": -1, "hidden_size": 576}',
        '{"num_hidden_layers": 30, "hidden_size": true}',
        '{"text_config": [1, 2], "hidden_size": 576}',
        "\xff\xfe not text",
    ],
    ids=["a list", "a string", "negative", "a boolean", "odd text_config", "not UTF-8"],
)
def test_a_hand_edited_config_is_left_to_the_loader_by_the_torch_free_check(tmp_path, config):
    from subclone_viz.cli import build_parser, refuse_misfit
    from subclone_viz.parent_config import config_dims

    (tmp_path / "config.json").write_bytes(config.encode("latin-1"))
    args = build_parser().parse_args(["subclone", "--parent", str(tmp_path), "--hidden", "9999", "--out", "x"])
    assert config_dims(str(tmp_path)) is None  # nothing refused on a guess: loading names what is wrong
    assert refuse_misfit(args) is None


def test_a_garbage_gguf_is_named(tmp_path, capsys):
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(b"\x00" * 100)
    assert_one_line_error(*run(capsys, "info", "--parent", str(garbage)), str(garbage), "not a GGUF file")


@pytest.mark.parametrize("layout", ["file", "folder", "jsonl"])
def test_non_utf8_data_names_the_file(parents, tmp_path, capsys, layout):
    if layout == "folder":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "good.txt").write_text("w1 w2 w3 " * 100)
        bad = tmp_path / "docs" / "latin1.txt"
        data = tmp_path / "docs"
    else:
        bad = data = tmp_path / ("latin1.txt" if layout == "file" else "latin1.jsonl")
    bad.write_bytes(
        ("w1 w2 caf\xe9 " * 100).encode("latin-1") if layout != "jsonl" else '{"text": "caf\xe9"}\n'.encode("latin-1")
    )
    argv = ["profile", "--parent", str(parents["llama"]), "--data", str(data), "--seq-len", "4"]
    assert_one_line_error(*run(capsys, *argv), str(bad), "not UTF-8", "0xe9")


def test_a_zero_learning_rate_is_refused_like_a_negative_one(parents, tmp_path, no_work, capsys):
    for value in ("0", "-1", "subclone=0"):
        argv = compare_args(parents, tmp_path / "X", "--lr", value)
        assert_one_line_error(*run(capsys, *argv), "--lr", "> 0")
    argv = compare_args(parents, tmp_path / "X", "--weight-decay", "-1")
    assert_one_line_error(*run(capsys, *argv), "--weight-decay", ">= 0")


def test_a_damaged_size_grid_cell_is_measured_again_with_one_warning(parents, tmp_path, monkeypatch, caplog):
    import subclone_viz as sv
    from subclone_viz import sizing
    from tiny import tiny_batches

    monkeypatch.setenv("SUBCLONE_VIZ_CACHE", str(tmp_path / "cache"))
    parent = sv.load_parent(str(parents["llama"]), device="cpu")
    batches = tiny_batches("llama", count=1)
    first = sv.size_grid(parent, None, [2], [24], batches, width="uniform", progress=False)
    [cell] = (tmp_path / "cache" / "size_grid").glob("*.json")
    data = bytearray(cell.read_bytes())
    data[5] ^= 0x01  # a hand-edited or flipped digit
    cell.write_bytes(bytes(data))
    calls = []
    measure = sizing._measure_cell
    monkeypatch.setattr(sizing, "_measure_cell", lambda *args: calls.append(args) or measure(*args))
    caplog.set_level(logging.WARNING, logger="subclone_viz")
    again = sv.size_grid(parent, None, [2], [24], batches, width="uniform", progress=False)
    assert len(calls) == 1 and again.cache_hits == 0 and again.loss[0, 0] == first.loss[0, 0]
    assert "checksum" in caplog.text and "rebuilding the cached size-grid cell" in caplog.text


@pytest.mark.parametrize("damage", ["truncated weights", "config not JSON"])
def test_a_damaged_parent_directory_is_one_line_naming_it(parents, tmp_path, capsys, damage):
    import shutil

    copy = Path(shutil.copytree(parents["llama"], tmp_path / "llama"))
    if damage == "truncated weights":
        weights = copy / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        fragment = "truncated or damaged"
    else:
        (copy / "config.json").write_text("{oops")
        fragment = "config.json"
    assert_one_line_error(*run(capsys, "info", "--parent", str(copy)), str(copy), fragment)


def test_losing_a_race_for_the_output_is_exit_2_and_keeps_the_winner(parents, tmp_path, monkeypatch, capsys):
    """Another process publishes --out between this run's checks and its own publish: this run exits 2 with
    one line and the winner's output stays whole."""
    from subclone_viz import _atomic

    out = tmp_path / "X"
    real_fault = _atomic._fault

    def winner_arrives(point: str, target: Path) -> None:
        if point == "staged" and target.name == "X" and not out.exists():
            out.mkdir()
            (out / "winner.txt").write_text("the other process's output")
        real_fault(point, target)

    monkeypatch.setattr(_atomic, "_fault", winner_arrives)
    assert_late_error(*run(capsys, *subclone_args(parents, out)), "written by another process meanwhile")
    assert sorted(p.name for p in out.iterdir()) == ["winner.txt"] and leftovers(tmp_path) == []
