"""Fixtures of the fault-injection suite: tiny local parents and a corpus, and a read-only directory.

Every test here runs in seconds on tiny random models (tests/tiny.py) saved as ordinary model directories;
only the SmolLM2 conversion test (marked slow) needs the real embedded parent. Helpers are in faultkit.py.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tiny import WORDS, tiny_model, word_tokenizer


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
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=8,
        in_chans=3,
        depth=2,
        embed_dim=32,
        num_heads=4,
        num_classes=3,
    )
    save_for_hf(model, vit, safe_serialization=True, data_config={"input_size": (3, 16, 16)})
    corpus = root / "corpus.txt"
    rng = random.Random(0)
    corpus.write_text(" ".join(rng.choice(WORDS[:20]) for _ in range(3000)))
    return {"llama": llama, "vit3": vit, "corpus": corpus}


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
