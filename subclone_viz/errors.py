"""The library's exceptions: one base, and one subclass for the user's mistakes.

Every exception subclone_viz raises on purpose derives from :class:`SubcloneVizError`. Those that report
something the user can fix (a bad value, a file that is damaged or in the way, a place that cannot be
written) derive from :class:`UserError`; the command line catches that one class and prints it as one line
with exit status 2, and widgets show it as one line in the view. Each keeps a familiar builtin base as well
(``ValueError``, ``FileExistsError``...), so code written against those still catches them.

This module imports nothing from the package: every layer may raise these.

Example::

    >>> from subclone_viz.errors import SubcloneVizError, UserError
    >>> class BadBudget(UserError, ValueError):
    ...     '''A training budget that cannot be met.'''
    >>> try:
    ...     raise BadBudget("budget=-3 tokens: give a positive number")
    ... except UserError as error:
    ...     print(f"error: {error}")
    error: budget=-3 tokens: give a positive number
    >>> issubclass(BadBudget, SubcloneVizError) and issubclass(BadBudget, ValueError)
    True
"""

from __future__ import annotations


class SubcloneVizError(Exception):
    """Base of every exception subclone_viz raises on purpose."""


class UserError(SubcloneVizError):
    """Something the user asked for or handed in is wrong, and the message says what would be valid.

    Never a bug of the library: the command line reports these as one line (exit status 2), without a traceback.
    """


class ConfigurationError(UserError, ValueError):
    """A setting, name or value that is not one the library accepts (an unknown registry name, a bad option)."""


class UnknownNameError(ConfigurationError, KeyError):
    """A name looked up in a registry (a family, estimator, parent source, strategy) that nobody registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


__all__ = ["ConfigurationError", "SubcloneVizError", "UnknownNameError", "UserError"]
