"""The package's version, in a module of its own so that every layer can name it without importing the
package's ``__init__`` (which imports every layer).

Example::

    >>> from subclone_viz._version import __version__
    >>> __version__.count(".") >= 1
    True
"""

__version__ = "0.1.0"
