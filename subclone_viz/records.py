"""The record protocol: how every result the library saves is written, named, versioned and read back.

A *record* is a small dataclass of results (a profile, a plan, a training history, a comparison, a size grid,
a speedup study, a forecast). Every record class:

* names its file kind with ``FORMAT`` (``"subclone_viz.speedup_study"``) and an integer ``VERSION`` that goes up
  when the layout changes; ``READS`` lists the older versions ``from_dict`` still understands (a document
  written before records carried a version reads as version 0);
* turns itself into plain JSON data with ``to_dict()`` and back with ``from_dict(data)``, which validates
  every field and raises ``ValueError``/``KeyError``/``TypeError`` naming the bad one;
* is saved with ``save(path, overwrite=False)`` through the one atomic writer (only the main process writes
  under ``accelerate launch``) and read with ``load(path)``, where anything wrong with the file, whatever it is,
  becomes one :class:`~subclone_viz._atomic.DamagedFileError` that names the file.

Records stored as something other than one JSON document (a profile's ``.npz``, a comparison's directory)
override ``save``/``load`` and keep the rest. Every record class is registered by its ``FORMAT`` in
:data:`RECORDS` (the list the fuzzed-reader suite iterates), and :func:`load_record` reads any of them.

Example::

    >>> from dataclasses import dataclass
    >>> from subclone_viz.records import RECORDS, Record, load_record, register_record
    >>> @register_record
    ... @dataclass
    ... class Tally(Record):
    ...     FORMAT = "example.tally"
    ...     VERSION = 1
    ...     counts: dict
    ...     def to_dict(self):
    ...         return {"counts": self.counts}
    ...     @classmethod
    ...     def from_dict(cls, data):
    ...         counts = data["counts"]
    ...         if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
    ...             raise ValueError("'counts' must map names to integers")
    ...         return cls(counts)
    >>> _ = Tally({"a": 1}).save("tally.json")
    >>> load_record("tally.json")
    Tally(counts={'a': 1})
    >>> _ = open("bad.json", "w").write('{"format": "example.tally", "version": 1, "counts": {"a": "x"}}')
    >>> Tally.load("bad.json")
    Traceback (most recent call last):
    ...
    subclone_viz._atomic.DamagedFileError: bad.json: 'counts' must map names to integers
    >>> _ = RECORDS.unregister("example.tally")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from . import distributed
from ._atomic import DamagedFileError, read_json, write_file
from .registry import Registry

R = TypeVar("R", bound="Record")


class Record:
    """Base of the library's saved results; see the module docstring for the protocol."""

    FORMAT: ClassVar[str]
    VERSION: ClassVar[int]
    READS: ClassVar[tuple[int, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (no format or version: :meth:`to_document` adds them)."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """The record from :meth:`to_dict`'s data, validated; ``data["version"]`` is there when it came from a file."""
        raise NotImplementedError

    def to_document(self) -> dict[str, Any]:
        """What :meth:`save` writes: ``format``, ``version`` and the record's data."""
        return {"format": self.FORMAT, "version": self.VERSION, **self.to_dict()}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_document(), indent=indent)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the record as one JSON file, atomically; an existing file is kept unless ``overwrite``. Under
        several processes only the main one writes; every process returns the path."""
        return distributed.on_main(write_file, path, self.to_json(), overwrite=overwrite)

    @classmethod
    def check_document(cls, data: dict[str, Any], where: str | os.PathLike) -> None:
        """Refuse a document of another kind or a version this release does not read."""
        shown = Path(where)
        found = data.get("format")
        if found is not None and found != cls.FORMAT:
            raise DamagedFileError(f"{shown} is a {found!r} file, not a {cls.FORMAT!r} one")
        # A document without a format was written before records were versioned, whatever else it says.
        version = 0 if found is None else data.get("version")
        if found is None and 0 not in cls.READS:
            raise DamagedFileError(f"{shown} is not a {cls.FORMAT!r} file (it has no 'format' field)")
        if version != cls.VERSION and version not in cls.READS:
            readable = ", ".join(str(v) for v in (*cls.READS, cls.VERSION))
            raise DamagedFileError(
                f"{shown}: {cls.FORMAT} version {version!r}; this subclone_viz reads version {readable} "
                f"(a newer file needs a newer subclone_viz)"
            )

    @classmethod
    def from_document(cls: type[R], data: Any, where: str | os.PathLike) -> R:
        """Validate a whole document read from ``where`` and build the record; any problem is a
        :class:`DamagedFileError` naming ``where``."""
        if not isinstance(data, dict):
            raise DamagedFileError(f"{where} holds a JSON {type(data).__name__}, not a {cls.FORMAT} object")
        cls.check_document(data, where)
        try:
            return cls.from_dict(data)
        except DamagedFileError:
            raise
        except KeyError as error:
            raise DamagedFileError(f"{where}: the field {error.args[0]!r} is missing") from error
        except (ValueError, TypeError, AttributeError, IndexError, OverflowError) as error:
            # OverflowError: a number too large for an integer field (1e400 reads as infinity)
            raise DamagedFileError(f"{where}: {error}") from error

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        """Read back a file written by :meth:`save`; whatever is wrong with it raises :class:`DamagedFileError`
        naming it."""
        path = Path(path).expanduser()
        if path.is_dir():
            raise DamagedFileError(f"{path} is a directory, not a {cls.FORMAT} file")
        return cls.from_document(read_json(path, dict), path)


def _check_record(name: str, cls: type) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Record)):
        raise TypeError(f"{name!r}: only Record subclasses can be registered as records, got {cls!r}")
    if getattr(cls, "FORMAT", None) != name or not isinstance(getattr(cls, "VERSION", None), int):
        raise TypeError(f"{cls.__name__} must declare FORMAT = {name!r} and an integer VERSION")


# The package's own records are declared by module, so that load_record and the list find them before their
# modules are imported (importing subclone_viz imports none of them).
_PACKAGE_RECORDS = {
    "subclone_viz.profile": "subclone_viz.profile:Profile",
    "subclone_viz.plan": "subclone_viz.plan:SubclonePlan",
    "subclone_viz.history": "subclone_viz.train:History",
    "subclone_viz.comparison": "subclone_viz.compare:Comparison",
    "subclone_viz.size_grid": "subclone_viz.sizing:SizeGrid",
    "subclone_viz.speedup_study": "subclone_viz.study:SpeedupStudy",
    "subclone_viz.generations": "subclone_viz.outputs:Generations",
    "subclone_viz.token_losses": "subclone_viz.outputs:TokenLosses",
    "subclone_viz.logit_lens": "subclone_viz.lens:LogitLens",
    "subclone_viz.layer_similarity": "subclone_viz.similarity:LayerSimilarity",
    "subclone_viz.shipped_figures": "subclone_viz.shipped:ShippedFigures",
    "subclone_viz.forecast": "subclone_viz.forecast:Forecast",
    "subclone_viz.forecast_prior": "subclone_viz.forecast:ForecastPrior",
    "subclone_viz.budget_grid": "subclone_viz.budget:BudgetGrid",
}
RECORDS: Registry[type[Record]] = Registry(
    "record format", "subclone_viz.records", check=_check_record, declared=_PACKAGE_RECORDS
)


def register_record(cls: type[R]) -> type[R]:
    """Class decorator: register a :class:`Record` subclass by its ``FORMAT``."""
    RECORDS.register(cls.FORMAT, cls)
    return cls


def load_record(path: str | os.PathLike) -> Record:
    """Read any registered record from a JSON file, by the ``format`` it declares."""
    path = Path(path).expanduser()
    data = read_json(path, dict)
    found = data.get("format")
    if found not in RECORDS:
        raise DamagedFileError(
            f"{path} declares format {found!r}, which is not a record this subclone_viz reads ({', '.join(RECORDS)})"
        )
    return RECORDS[found].from_document(data, path)


__all__ = ["RECORDS", "Record", "load_record", "register_record"]
