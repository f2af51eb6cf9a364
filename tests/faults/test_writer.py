"""The atomic-write layer on its own: races, leftovers of killed runs, full and read-only places, permissions,
symlinks, locks and self-verifying caches. Plain files and directories, no models: milliseconds each."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from subclone_viz import _atomic
from subclone_viz._atomic import (
    MANIFEST,
    DamagedFileError,
    OutputExistsError,
    OutputLocationError,
    WriteFailedError,
    check_new_directory,
    clean_stale,
    file_lock,
    read_cache_file,
    staged_directory,
    verify_manifest,
    write_cache_file,
    write_file,
)
from faultkit import dead_pid, leftovers


def _race(monkeypatch: pytest.MonkeyPatch, writers: int, write) -> list[BaseException | None]:
    """Run ``write(i)`` in ``writers`` threads that all stage first and then publish at the same moment."""
    barrier = threading.Barrier(writers, timeout=30)
    real_fault = _atomic._fault

    def wait_for_all(point: str, target: Path) -> None:
        if point == "staged":
            barrier.wait()  # everyone has passed the up-front checks and filled their staging
        real_fault(point, target)

    monkeypatch.setattr(_atomic, "_fault", wait_for_all)
    outcomes: list[BaseException | None] = [None] * writers

    def run(i: int) -> None:
        try:
            write(i)
        except BaseException as error:  # noqa: BLE001 - recorded for the assertions
            outcomes[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_directory_writers_one_wins_whole_the_other_fails(tmp_path, monkeypatch):
    out = tmp_path / "X"

    def write(i: int) -> None:
        with staged_directory(out) as staging:
            for name in ("a", "b", "c"):
                (staging / name).write_text(f"writer {i}")

    outcomes = _race(monkeypatch, 2, write)
    assert sum(o is None for o in outcomes) == 1
    loser = next(o for o in outcomes if o is not None)
    assert isinstance(loser, OutputExistsError) and "another process" in str(loser)
    contents = {(out / name).read_text() for name in ("a", "b", "c")}
    assert len(contents) == 1  # one writer's files only, never a mix
    assert leftovers(tmp_path) == []


def test_concurrent_file_writers_one_wins_the_other_fails(tmp_path, monkeypatch):
    out = tmp_path / "x.txt"
    outcomes = _race(monkeypatch, 3, lambda i: write_file(out, f"writer {i}\n" * 1000))
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, OutputExistsError) for o in outcomes if o is not None)
    assert len(set(out.read_text().splitlines())) == 1
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_and_leaves_nothing_aside(tmp_path):
    out = tmp_path / "X"
    with staged_directory(out) as staging:
        (staging / "old").write_text("old")
    with pytest.raises(OutputExistsError, match="overwrite"):
        with staged_directory(out) as staging:
            raise AssertionError("never reached: the check comes first")
    with staged_directory(out, overwrite=True) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert leftovers(tmp_path) == []


def test_a_failure_inside_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_directory(tmp_path / "X") as staging:
            (staging / "half").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_stale_staging_of_a_dead_process_is_removed_and_a_live_one_kept(tmp_path, caplog):
    dead, live = dead_pid(), os.getpid()
    (tmp_path / f".X.tmp-{dead}-abcd").mkdir()
    (tmp_path / f".X.tmp-{dead}-abcd" / "model.safetensors").write_bytes(b"0" * 1000)
    (tmp_path / f".X.tmp-{live}-ef01").mkdir()
    (tmp_path / f".Y.tmp-{dead}-0123").mkdir()  # another target's: left for that target's next write
    with staged_directory(tmp_path / "X") as staging:
        (staging / "a").write_text("a")
    assert leftovers(tmp_path) == [f".X.tmp-{live}-ef01", f".Y.tmp-{dead}-0123"]
    assert "removed 1 leftover" in caplog.text


def test_an_output_set_aside_by_a_killed_overwrite_is_put_back(tmp_path):
    aside = tmp_path / f".X.old-{dead_pid()}-abcd"
    aside.mkdir()
    (aside / "model.safetensors").write_text("the old output")
    assert clean_stale(tmp_path / "X") == [aside]
    assert (tmp_path / "X" / "model.safetensors").read_text() == "the old output"


def test_outputs_get_the_umask_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        with staged_directory(tmp_path / "X") as staging:
            fd = os.open(staging / "private.bin", os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors writes
            os.close(fd)
            (staging / "sub").mkdir(mode=0o700)
        write_file(tmp_path / "report.html", "<html>")
    finally:
        os.umask(old)
    assert (tmp_path / "X").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "X" / "sub").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "X" / "private.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644


def test_a_symlinked_output_is_written_where_it_points_and_leaves_nothing(tmp_path):
    real = tmp_path / "real"
    with staged_directory(real) as staging:
        (staging / "a").write_text("first")
    link = tmp_path / "link"
    link.symlink_to(real)
    with staged_directory(link, overwrite=True) as staging:
        (staging / "a").write_text("second")
    assert link.is_symlink() and (link / "a").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


@pytest.mark.parametrize("name", [".", "..", ""])
def test_the_current_directory_is_never_an_output(tmp_path, monkeypatch, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(OutputLocationError, match="current directory"):
        check_new_directory(name or os.getcwd(), overwrite=True)


def test_a_read_only_place_is_refused_before_any_work(read_only_dir):
    with pytest.raises(OutputLocationError, match="not writable"):
        check_new_directory(read_only_dir / "deeper" / "X")
    with pytest.raises(OutputLocationError, match="not writable"):
        write_file(read_only_dir / "x.txt", "x")


def test_an_injected_full_disk_fails_with_one_message_and_publishes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBCLONE_VIZ_FAULT", "writing:enospc")
    with pytest.raises(WriteFailedError, match="No space left on device") as raised:
        write_file(tmp_path / "x.txt", "x" * 10_000)
    assert raised.value.errno == errno.ENOSPC and "x.txt" in str(raised.value)
    monkeypatch.setenv("SUBCLONE_VIZ_FAULT", "staged:enospc")
    with pytest.raises(WriteFailedError):
        with staged_directory(tmp_path / "X") as staging:
            (staging / "a").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "full"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here; the injected ENOSPC test covers a full disk")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_fails_with_one_message_and_publishes_nothing(tiny_tmpfs):
    with pytest.raises(WriteFailedError, match="No space left on device"):
        write_file(tiny_tmpfs / "big.bin", b"0" * 1_000_000)
    with pytest.raises(WriteFailedError, match="No space left on device"):
        with staged_directory(tiny_tmpfs / "X") as staging:
            (staging / "big.bin").write_bytes(b"0" * 1_000_000)
    assert list(tiny_tmpfs.iterdir()) == []


def test_a_lock_makes_a_second_filler_wait(tmp_path):
    order = []

    def fill(name: str, hold: float) -> None:
        with file_lock(tmp_path / "cache"):
            order.append(f"{name} in")
            time.sleep(hold)
            order.append(f"{name} out")

    first = threading.Thread(target=fill, args=("first", 0.3))
    first.start()
    time.sleep(0.1)
    fill("second", 0)
    first.join()
    assert order == ["first in", "first out", "second in", "second out"]


def test_a_cache_file_detects_truncation_and_flipped_bytes(tmp_path):
    path = tmp_path / "ids.npy"
    write_cache_file(path, b"payload " * 100)
    assert read_cache_file(path) == b"payload " * 100
    assert read_cache_file(tmp_path / "absent") is None
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    with pytest.raises(DamagedFileError, match="ids.npy is truncated"):
        read_cache_file(path)
    path.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    with pytest.raises(DamagedFileError, match="checksum"):
        read_cache_file(path)


def test_a_manifest_detects_truncated_flipped_missing_and_extra_files(tmp_path):
    cached = tmp_path / "parent"
    with staged_directory(cached, manifest=True) as staging:
        (staging / "model.safetensors").write_bytes(bytes(range(256)) * 40)
        (staging / "config.json").write_text("{}")
    assert (cached / MANIFEST).is_file() and verify_manifest(cached) is None
    weights = cached / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1])
    assert "model.safetensors has 10,239 bytes, 10,240 were written" == verify_manifest(cached)
    weights.write_bytes(data[:5000] + bytes([data[5000] ^ 0x10]) + data[5001:])
    assert "checksum" in verify_manifest(cached)
    weights.write_bytes(data)
    assert verify_manifest(cached) is None
    (cached / "stray").write_text("?")
    assert "unexpected ['stray']" in verify_manifest(cached)
    assert verify_manifest(tmp_path / "nothing") == "missing"
