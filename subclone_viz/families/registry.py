"""The family registry: every architecture adapter, built in or from a plugin, by name.

A family module registers its adapter class with ``@register_family``; a separately installed package does the
same from its own module, or declares it under the ``subclone_viz.families`` entry-point group (loaded on the
first lookup). :func:`~subclone_viz.families.family_of` tries the registered families in registration order.

Example::

    >>> from subclone_viz.families import FAMILIES
    >>> list(FAMILIES)[:3]
    ['gpt2', 'llama', 'gemma']
    >>> FAMILIES["llama"].model_types
    ('llama', 'mistral', 'qwen2', 'qwen3')
"""

from __future__ import annotations

from typing import TypeVar

from ..registry import Registry
from .base import Family

F = TypeVar("F", bound=type[Family])


def _check_family(name: str, family: type) -> None:
    if not (isinstance(family, type) and issubclass(family, Family)):
        raise TypeError(f"family {name!r}: expected a subclass of subclone_viz.families.Family, got {family!r}")
    missing = [attr for attr in ("name", "description", "rules") if not hasattr(family, attr)]
    if missing:
        raise TypeError(f"family {name!r} ({family.__name__}) lacks the class attribute(s) {', '.join(missing)}")
    if family.name != name:
        raise TypeError(f"family class {family.__name__} is named {family.name!r}, registered as {name!r}")


FAMILIES: Registry[type[Family]] = Registry("family", "subclone_viz.families", check=_check_family)


def register_family(family: F) -> F:
    """Class decorator: add an adapter class to :data:`FAMILIES` under its ``name``."""
    FAMILIES.register(family.name, family)
    return family


__all__ = ["FAMILIES", "register_family"]
