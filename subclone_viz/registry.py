"""Open registries: the one way the library names its extension points.

Families, importance estimators, parent sources, plan strategies and file readers are each a
:class:`Registry`: a name -> object mapping that the package fills with its own entries and that anyone can
extend, either by calling ``register`` at import time or, for a separately installed package, through an
entry point in the registry's group (``[project.entry-points."subclone_viz.families"]`` in its
pyproject). Entry points load on the first lookup, so importing subclone_viz stays cheap and a broken plugin
names itself in a warning instead of breaking the import.

An unknown name is a :class:`~subclone_viz.errors.UnknownNameError` that lists the registered names and the
closest match.

Example::

    >>> from subclone_viz.registry import Registry
    >>> colours = Registry("colour", entry_point_group=None)
    >>> colours.register("red", "#f00")
    '#f00'
    >>> colours.register("green", "#0f0")
    '#0f0'
    >>> colours["red"], list(colours)
    ('#f00', ['red', 'green'])
    >>> colours["grean"]
    Traceback (most recent call last):
    ...
    subclone_viz.errors.UnknownNameError: no colour named 'grean' (did you mean 'green'?); registered: red, green
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from .errors import ConfigurationError, UnknownNameError

T = TypeVar("T")
log = logging.getLogger("subclone_viz")


class Registry(Mapping[str, T], Generic[T]):
    """An ordered name -> object mapping, open to plugins.

    Args:
        kind: what an entry is, for messages ("family", "importance estimator").
        entry_point_group: the entry-point group plugins register under; None for none.
        check: called on every object registered; raises ``TypeError``/``ValueError`` to refuse it.
        declared: entries of the package itself that live in a higher layer, as name -> ``"module:attribute"``:
            loaded on the first lookup like entry points, so that the registry's module never imports theirs
            (the digits ViT's parent source lives above the trainer it needs).
    """

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None,
        check: Callable[[str, T], None] | None = None,
        declared: Mapping[str, str] | None = None,
    ):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._check = check
        self._entries: dict[str, T] = {}
        self._declared = [EntryPoint(name, value, entry_point_group or "") for name, value in (declared or {}).items()]
        self._plugins_loaded = entry_point_group is None and not self._declared

    def register(self, name: str, obj: T, replace: bool = False) -> T:
        """Add ``obj`` under ``name`` and return it; a name taken is refused unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries and not replace and self._entries[name] is not obj:
            raise ConfigurationError(
                f"a {self.kind} named {name!r} is already registered (pass replace=True to replace it)"
            )
        if self._check is not None:
            self._check(name, obj)
        self._entries[name] = obj
        return obj

    def decorator(self, name: str, replace: bool = False) -> Callable[[T], T]:
        """``@registry.decorator("name")`` registers what it decorates."""
        return lambda obj: self.register(name, obj, replace=replace)

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (tests and notebooks that registered a temporary one)."""
        self._load_plugins()
        if name not in self._entries:
            raise self._unknown(name)
        return self._entries.pop(name)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        installed = entry_points(group=self.entry_point_group) if self.entry_point_group else ()
        for point in [*self._declared, *installed]:
            try:
                loaded = point.load()
                if point.name not in self._entries:
                    self.register(point.name, loaded)
            except Exception as error:  # a broken plugin must not break the library: say which one and go on
                log.warning(
                    "subclone_viz: skipped the %s plugin %r (%s): %s", self.kind, point.name, point.value, error
                )

    def _unknown(self, name: object) -> UnknownNameError:
        names = list(self._entries)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UnknownNameError(f"no {self.kind} named {name!r}{hint}; registered: {', '.join(names) or 'none'}")

    def __getitem__(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self._unknown(name) from None

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def names(self) -> "Names":
        """A live, read-only sequence of the registered names (for choices lists that must see plugins)."""
        return Names(self)


class Names(Sequence[str]):
    """The names of a :class:`Registry`, as a sequence that follows later registrations."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, index):  # type: ignore[override]
        return list(self._registry)[index]

    def __len__(self) -> int:
        return len(self._registry)

    def __repr__(self) -> str:
        return repr(tuple(self._registry))


__all__ = ["Names", "Registry"]
