"""Shared pieces of the fault-injection suite: tiny local parents and corpora, a CLI run in a subprocess (to be
killed), a read-only directory, and the one-line-error check.

Every test here runs in seconds on tiny random models (tests/tiny.py) saved as ordinary model directories;
only the SmolLM2 conversion test (marked slow) needs the real embedded parent.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import WORDS, tiny_model, word_tokenizer

REPO = Path(__file__).resolve().parents[2]
ONE_TORCH_THREAD = True  # tiny models: see tests/conftest.py


@pytest.fixture(scope="session")
def parents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama with a word tokenizer, a tiny 3-class RGB ViT, and a text corpus."""
    import timm
    from timm.models import save_for_hf

    root = tmp_path_factory.mktemp("fault-parents")
    llama = root / "llama"
    tiny_model("llama").save_pretrained(llama)
    word_tokenizer().save_pretrained(llama)
    vit = root / "vit3"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, in_chans=3,
                              depth=2, embed_dim=32, num_heads=4, num_classes=3)
    save_for_hf(model, vit, safe_serialization=True, data_config={"input_size": (3, 16, 16)})
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))
    return {"llama": llama, "vit3": vit, "corpus": corpus}


def text_args(parents: dict[str, Path]) -> list[str]:
    return ["--parent", str(parents["llama"]), "--data", str(parents["corpus"]), "--seq-len", "16",
            "--batch-size", "2"]


def subclone_args(parents: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """A subclone that needs no profile and no scoring: seconds."""
    return ["subclone", *text_args(parents), "--layers", "2", "--hidden", "24", "--heads", "3", "--kv-heads", "1",
            "--width", "uniform", "--eval-tokens", "0", "--out", str(out), *extra]


def compare_args(parents: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["compare", *text_args(parents), "--layers", "2", "--hidden", "24", "--heads", "3", "--kv-heads", "1",
            "--inits", "random", "--steps", "2", "--eval-tokens", "32", "--out", str(out), *extra]


def run_cli_subprocess(*argv: str, fault: str | None = None, target: str = "", cache: Path | None = None,
                       timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m subclone_viz ARGV`` in a fresh process running this checkout, optionally with an injected fault
    (``SUBCLONE_VIZ_FAULT``, see subclone_viz/_atomic.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SUBCLONE_VIZ_FAULT", None)
    env.pop("SUBCLONE_VIZ_FAULT_TARGET", None)
    if fault is not None:
        env["SUBCLONE_VIZ_FAULT"] = fault
    if target:
        env["SUBCLONE_VIZ_FAULT_TARGET"] = target
    if cache is not None:
        env["SUBCLONE_VIZ_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "subclone_viz", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, and exactly one line on stderr holding every fragment."""
    assert code == 2, (code, err)
    assert out == ""
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_late_error(code: int, out: str, err: str, *fragments: str) -> str:
    """An error after work began (progress bars may precede it): exit status 2, no traceback, the error as the
    last line of stderr holding every fragment."""
    assert code == 2, (code, err)
    assert out == "" and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error:" in last
    for fragment in fragments:
        assert fragment in last, last
    return last


def leftovers(directory: Path) -> list[str]:
    """Staging or set-aside entries of the atomic writer (anything half-written) in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def dead_pid() -> int:
    """The id of a process that has exited (not reused this soon on Linux's incrementing PIDs)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def read_only_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A directory nothing can be created in: immutable (chattr +i) when the filesystem allows, since tests run
    as root and permission bits do not stop root; else an injected PermissionError for paths inside it."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    chattr = shutil.which("chattr")
    if chattr and subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode == 0:
        yield directory
        subprocess.run([chattr, "-i", str(directory)], check=True)
        return
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(directory) + os.sep) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    yield directory
