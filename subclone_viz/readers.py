"""Every kind of file the library reads back, in one registry: the list the fuzzed-reader suite iterates.

A file the library reads (a parent's GGUF file, a training checkpoint, a cache...) may be truncated, damaged,
replaced by another kind of file or by a directory. Whatever happened, its reader must end in one of two ways:
the file's contents, whole; or a :class:`~subclone_viz.errors.UserError` (in practice a
:class:`~subclone_viz._atomic.DamagedFileError` or a :class:`~subclone_viz.parent.ParentLoadError`) that names the
file and says what is wrong. For a cache the library catches that error, says it in one warning line and
rebuilds the cache.

:data:`READERS` maps a file kind's name to its :class:`Reader`: the function that reads it from a path, a
description, whether it is a directory and whether it is a cache. Each module registers the kinds it reads,
next to their reader, with :func:`register_reader` (and the package declares them in ``_PACKAGE_READERS``, as
it declares its records); the records of :data:`~subclone_viz.records.RECORDS` (read by
their class's ``load``) are the other half of the list. A kind registered without a case in the fuzz suite
(tests/faults/test_fuzz_readers.py) fails the test suite.

Example::

    >>> from subclone_viz.readers import READERS
    >>> READERS["checkpoint"].directory, READERS["token-cache"].cache
    (True, True)
    >>> READERS["subclone-record"].read("subclone.json")
    Traceback (most recent call last):
    ...
    subclone_viz._atomic.DamagedFileError: subclone.json is missing
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import Registry


@dataclass(frozen=True)
class Reader:
    """How the library reads one kind of file.

    Attributes:
        read: ``read(path)`` returns what the file holds, whole, or raises a UserError naming the file.
        description: what the file is and what writes it.
        directory: the kind is a directory of files (a checkpoint, a model directory), not one file.
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


# The package's own readers, declared by module (as records are), so that the list holds them before their modules
# are imported; each module registers its own next to the function that reads the file.
_PACKAGE_READERS = {
    "gguf": "subclone_viz.parent:GGUF_READER",
    "model-directory": "subclone_viz.parent:MODEL_DIRECTORY_READER",
    "model-card": "subclone_viz.parent:MODEL_CARD_READER",
    "parent-cache": "subclone_viz.parent:PARENT_CACHE_READER",
    "vit-digits-cache": "subclone_viz.vision:VIT_DIGITS_READER",
    "subclone-record": "subclone_viz.export:SUBCLONE_RECORD_READER",
    "token-cache": "subclone_viz.data:TOKEN_CACHE_READER",
    "size-grid-cell": "subclone_viz.sizing:GRID_CELL_READER",
    "budget-pilot": "subclone_viz.budget:PILOT_READER",
    "checkpoint": "subclone_viz.train:CHECKPOINT_READER",
}
READERS: Registry[Reader] = Registry(
    "file reader", "subclone_viz.readers", check=_check_reader, declared=_PACKAGE_READERS
)


def register_reader(
    name: str, read: Callable[[Path], Any], description: str, directory: bool = False, cache: bool = False
) -> Reader:
    """Register the reader of a new kind of file under ``name`` (see :class:`Reader`) and return it."""
    return READERS.register(name, Reader(read, description, directory, cache))


__all__ = ["READERS", "Reader", "register_reader"]
