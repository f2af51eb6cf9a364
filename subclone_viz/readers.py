"""Every kind of file the library reads back, in one registry: the list the fuzzed-reader suite iterates.

A file the library reads (a parent's GGUF file, a saved profile, a training checkpoint, a cache...) may be
truncated, damaged, replaced by another kind of file or by a directory. Whatever happened, its reader must end
in one of two ways: the file's contents, whole; or a :class:`~subclone_viz.errors.UserError` (in practice a
:class:`~subclone_viz._atomic.DamagedFileError` or a :class:`~subclone_viz.parent.ParentLoadError`) that names the
file and says what is wrong. For a cache the library catches that error, says it in one warning line and
rebuilds the cache.

:data:`READERS` maps a file kind's name to its :class:`Reader`: the function that reads it from a path, a
description, whether it is a directory and whether it is a cache. The records of :data:`~subclone_viz.records.RECORDS`
(read by their class's ``load``) are the other half of that list. A new file kind is one
:func:`register_reader` call (or, for a JSON-style record, ``@register_record``), and the test suite then asks
for its fuzz case (tests/faults/test_fuzz_readers.py).

Example::

    >>> from subclone_viz.readers import READERS
    >>> READERS["history"].description
    "a training run's History as JSON (History.save_json)"
    >>> READERS["token-cache"].cache, READERS["comparison"].directory
    (True, True)
    >>> READERS["history"].read("missing.json")
    Traceback (most recent call last):
    ...
    subclone_viz._atomic.DamagedFileError: missing.json is missing
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .compare import Comparison
from .data import read_token_cache
from .export import read_subclone_record
from .parent import load_parent, read_converted_parent, read_model_card
from .profile import Profile
from .registry import Registry
from .sizing import read_grid_cell
from .study import SpeedupStudy
from .train import History, read_checkpoint
from .vision import read_vit_digits


@dataclass(frozen=True)
class Reader:
    """How the library reads one kind of file.

    Attributes:
        read: ``read(path)`` returns what the file holds, whole, or raises a UserError naming the file.
        description: what the file is and what writes it.
        directory: the kind is a directory of files (a comparison, a checkpoint), not one file.
        cache: the library rebuilds the file when ``read`` refuses it, with one warning line, instead of
            passing the error on.
    """

    read: Callable[[Path], Any]
    description: str
    directory: bool = False
    cache: bool = False


def _check_reader(name: str, reader: Reader) -> None:
    if not isinstance(reader, Reader) or not callable(reader.read):
        raise TypeError(f"{name!r}: a file reader is a Reader with a callable read, got {reader!r}")


READERS: Registry[Reader] = Registry("file reader", "subclone_viz.readers", check=_check_reader)


def register_reader(name: str, read: Callable[[Path], Any], description: str, directory: bool = False,
                    cache: bool = False) -> Reader:
    """Register the reader of a new kind of file under ``name`` (see :class:`Reader`) and return it."""
    return READERS.register(name, Reader(read, description, directory, cache))


def _gguf_parent(path: str | os.PathLike) -> Any:
    return load_parent(Path(path), device="cpu")


def _model_directory(path: str | os.PathLike) -> Any:
    return load_parent(Path(path), device="cpu")


register_reader("gguf", _gguf_parent, "a parent's .gguf model file (load_parent)")
register_reader("parent-cache", read_converted_parent, "an embedded GGUF parent converted once to safetensors, "
                "with its tokenizer and a manifest of checksums (cache_dir()/parents/<alias>)", directory=True,
                cache=True)
register_reader("vit-digits-cache", read_vit_digits, "the embedded digits ViT, trained once and cached with a "
                "manifest of checksums (cache_dir()/vit-digits)", directory=True, cache=True)
register_reader("model-directory", _model_directory, "a Hugging Face model directory, such as a saved destination: "
                "config.json, weights, tokenizer and model card (load_parent)", directory=True)
register_reader("model-card", read_model_card, "a model directory's README.md, whose front matter gives the "
                "weights' provenance")
register_reader("subclone-record", read_subclone_record, "a saved destination's subclone.json: the parent, the "
                "plan and the scales it was made with (save_destination)")
register_reader("profile", Profile.load, "a saved profile, .npz (Profile.save)")
register_reader("history", History.load_json, "a training run's History as JSON (History.save_json)")
register_reader("comparison", Comparison.load, "a comparison's directory: histories.json, summary.json and one "
                "CSV per initialization (Comparison.save)", directory=True)
register_reader("speedup-study", SpeedupStudy.load, "a speedup study, one JSON file (SpeedupStudy.save)")
register_reader("size-grid-cell", read_grid_cell, "one cached cell of a size grid (cache_dir()/size_grid)",
                cache=True)
register_reader("token-cache", read_token_cache, "a corpus's cached token ids (cache_dir()/tokens)", cache=True)
register_reader("checkpoint", read_checkpoint, "a training checkpoint, step-NNNNNNNN: model, optimizer, scheduler "
                "and random states, the history so far and a manifest of checksums (train(checkpoint_dir=...))",
                directory=True)


__all__ = ["READERS", "Reader", "register_reader"]
