"""Vision end to end without a download: a small ViT parent trained here on scikit-learn's digits.

No pretrained ViT weights can be had offline, so the embedded vision parent is honest about what it is: a timm
``vit_tiny_patch16_224`` architecture shrunk to 8x8 grey images (patch 4, so 4 patch tokens and a cls token; 6
blocks, width 128, 4 heads of 32, FFN 512; 1.2M parameters), trained *on this machine* on the training split
of scikit-learn's digits (22 batches of 64 of its 1,438 images) with :func:`~subclone_viz.train.train` (200
AdamW steps, seed 0, on one CPU thread: about 20 seconds) and scored on the 359 held-out images. It is cached
with timm's ``save_for_hf`` as safetensors under ``cache_dir()/parents/vit-digits`` (written to a staging
directory, then renamed, with a manifest of checksums: a damaged cache is retrained), with ``training.json``
(time, steps, held-out accuracy) and ``history.json`` (its training curve) beside it; later loads read that
directory in well under a second. Use it to see subcloning work on a vision transformer end to end (profile,
plan a half-width destination, compare its accuracy curve with random init); do not read its numbers as
ImageNet results.

Real parents: with a Hugging Face hub connection (or a local timm cache), the same calls take a pretrained
timm ViT and your own images::

    import subclone_viz as sv
    parent = sv.load_parent("timm/vit_small_patch16_224.augreg_in21k")      # 12 x 384, 6 heads
    train = sv.image_batches("/path/to/folder", batch_size=64, image_size=224, shuffle=True)  # folder/<class>/*.jpg
    heldout = sv.image_batches("/path/to/folder", batch_size=64, image_size=224, split="heldout")
    # or a Hugging Face image dataset: sv.image_batches("beans", batch_size=64, image_size=224)
    result = sv.compare(parent, sv.DestinationSpec(layers=12, hidden=192), train, steps=2000,
                        eval_batches=heldout)

A pretrained checkpoint's classifier predicts its own classes (ImageNet's): for another label set, build the
parent with ``timm.create_model(name, pretrained=True, num_classes=K)`` and pass the model object to
``load_parent`` (with its data config as ``processor``).

Example::

    >>> import subclone_viz as sv
    >>> from subclone_viz.vision import vit_digits_parent
    >>> parent = vit_digits_parent()          # trains once (about 20 s), then loads from the cache
    >>> parent.info["training"]["steps"]
    200
    >>> train = sv.image_batches("digits", batch_size=64, shuffle=True)
    >>> heldout = sv.image_batches("digits", batch_size=128, split="heldout", max_batches=1)
    >>> result = sv.compare(parent, sv.DestinationSpec(layers=6, hidden=64), train, steps=4, eval_batches=heldout,
    ...                     progress=False)       # 100 steps or more for real use
    >>> [row["init"] for row in result.summary_table()]
    ['random', 'subclone']
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._atomic import DamagedFileError, file_lock, note_rebuild, staged_directory, verify_manifest
from .data import cache_dir, image_batches
from .parent import LoadedSource, Parent, SourceRequest, load_parent, load_timm, register_source
from .readers import register_reader
from .train import History, train

__all__ = [
    "VIT_DIGITS",
    "VIT_DIGITS_NOTE",
    "load_vit_digits",
    "train_vit_digits",
    "vit_digits_dir",
    "vit_digits_history",
    "vit_digits_parent",
    "vit_digits_source",
]

VIT_DIGITS = "vit-digits"
VIT_DIGITS_NOTE = (
    "trained here on scikit-learn's 8x8 digits (no pretrained ViT is available offline): a stand-in parent for "
    "demonstrations, not a pretrained model"
)
_ARCHITECTURE = "vit_tiny_patch16_224"
_MODEL_ARGS = dict(img_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=128, depth=6, num_heads=4)
# A recipe that reaches about 95% held-out accuracy; the image statistics are image_batches' digits defaults.
_RECIPE = dict(steps=200, batch_size=64, lr=2e-3, weight_decay=0.05, seed=0, eval_every=25)
_DATA_CONFIG = {"input_size": (1, 8, 8), "mean": (0.5,), "std": (0.5,)}
# Its matrices are so small that a second CPU thread only waits on the first; on a shared machine the
# waiting threads spin and make each step several times slower (measured: 0.1 s on one thread, 0.7-1.1 s
# on two, with other jobs running).
_TRAINING_THREADS = 1
_TRAINING_FILE = "training.json"
_HISTORY_FILE = "history.json"


def vit_digits_dir() -> Path:
    """Where the trained digits ViT is cached."""
    return cache_dir() / "parents" / VIT_DIGITS


@contextlib.contextmanager
def _torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_vit_digits(directory: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Train the digits ViT from its fixed recipe and write it to ``directory`` (default :func:`vit_digits_dir`),
    replacing what is there. Returns the training record (seconds, steps, held-out loss and accuracy)."""
    import timm
    from timm.models import save_for_hf

    directory = Path(directory).expanduser() if directory is not None else vit_digits_dir()
    train_batches = image_batches("digits", batch_size=_RECIPE["batch_size"], shuffle=True, seed=_RECIPE["seed"])
    heldout = image_batches("digits", batch_size=512, split="heldout")
    torch.manual_seed(_RECIPE["seed"])
    model = timm.create_model(_ARCHITECTURE, pretrained=False, **_MODEL_ARGS)
    began = time.perf_counter()
    with _torch_threads(_TRAINING_THREADS):
        history = train(
            model,
            train_batches,
            steps=_RECIPE["steps"],
            lr=_RECIPE["lr"],
            weight_decay=_RECIPE["weight_decay"],
            eval_batches=heldout,
            eval_every=_RECIPE["eval_every"],
            seed=_RECIPE["seed"],
            mixed_precision="no",
            progress=progress,
            label=VIT_DIGITS,
        )
    seconds = time.perf_counter() - began
    if history.stopped_early:
        raise KeyboardInterrupt("training the digits ViT was interrupted; nothing was cached")
    final = history.evals[-1]
    record = {
        "description": VIT_DIGITS_NOTE,
        "dataset": f"{train_batches.description}; scored on {heldout.description}",
        "architecture": _ARCHITECTURE,
        "model_args": _MODEL_ARGS,
        "recipe": _RECIPE,
        "seconds": round(seconds, 1),
        "device": history.config["device"],
        "torch_threads": _TRAINING_THREADS,
        "steps": history.last_step,
        "heldout_loss": final.loss,
        "heldout_accuracy": final.accuracy,
    }
    with staged_directory(directory, overwrite=True, manifest=True) as staging:
        save_for_hf(
            model.cpu(),
            str(staging),
            safe_serialization=True,
            data_config=_DATA_CONFIG,
            model_config={"label_names": [str(digit) for digit in range(10)], "description": VIT_DIGITS_NOTE},
        )
        (staging / _TRAINING_FILE).write_text(json.dumps(record, indent=1))
        (staging / _HISTORY_FILE).write_text(history.to_json())
    return record


def load_vit_digits(progress: bool = True) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model, timm data config, info) of the cached digits ViT, training and caching it first if missing.

    This is what ``load_parent("vit-digits")`` calls.
    """
    directory = vit_digits_dir()
    with file_lock(directory):
        problem = verify_manifest(directory)
        if problem is not None:
            if problem != "missing":
                note_rebuild("digits ViT", f"{directory}: {problem}")
            train_vit_digits(directory, progress=progress)
    return read_vit_digits(directory)


def read_vit_digits(directory: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(model, timm data config, info) of a cached digits ViT, checked against its manifest first; a damaged
    one raises :class:`~subclone_viz._atomic.DamagedFileError` naming it (the caller trains it again)."""
    directory = Path(directory)
    problem = verify_manifest(directory)
    if problem is not None:
        raise DamagedFileError(f"{directory}: {problem}")
    model, data_config = load_timm(f"local-dir:{directory}", pretrained=True)
    training = json.loads((directory / _TRAINING_FILE).read_text())
    info = {"source": "embedded", "note": VIT_DIGITS_NOTE, "path": str(directory), "training": training}
    return model, data_config, info


def vit_digits_parent(device: str | torch.device = "auto", retrain: bool = False, progress: bool = True) -> Parent:
    """The digits ViT as a :class:`~subclone_viz.Parent` (``load_parent("vit-digits")``).

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        retrain: train it again (same recipe) and replace the cached one.
        progress: show the training progress bar when it trains.
    """
    if retrain:
        with file_lock(vit_digits_dir()):
            train_vit_digits(progress=progress)
    return load_parent(VIT_DIGITS, device=device)


@register_source(
    VIT_DIGITS, embedded="a small timm ViT (1.2M) trained here on scikit-learn's digits; no pretrained ViT is offline"
)
def vit_digits_source(request: SourceRequest) -> LoadedSource | None:
    """``load_parent("vit-digits")``: the cached digits ViT, trained first when it is missing."""
    if request.source != VIT_DIGITS:
        return None
    model, data_config, info = load_vit_digits()
    return LoadedSource(model, data_config, VIT_DIGITS, info)


def vit_digits_history() -> dict[str, Any]:
    """The cached digits ViT's training history (a :meth:`History.to_dict`), for plotting its curve."""
    path = vit_digits_dir() / _HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trained digits ViT at {path.parent}; call vit_digits_parent() first")
    return History.load(path).to_dict()


VIT_DIGITS_READER = register_reader(
    "vit-digits-cache",
    read_vit_digits,
    "the embedded digits ViT, trained once and cached with a manifest of checksums (cache_dir()/parents/vit-digits)",
    directory=True,
    cache=True,
)
