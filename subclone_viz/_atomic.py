"""Writing an output directory all at once: a failure leaves nothing half-written, and nothing is replaced
without an explicit ``overwrite``.

Example::

    with staged_directory("runs/a", overwrite=False) as staging:
        (staging / "summary.json").write_text("{}")
    # runs/a now holds summary.json; had the block raised, runs/a would be untouched
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def check_new_directory(directory: str | os.PathLike, overwrite: bool) -> Path:
    """``directory`` as a Path, or FileExistsError if writing there would replace something unasked."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory} is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
    return directory


@contextmanager
def staged_directory(directory: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``directory`` to fill; on success it is renamed into place (an old
    directory is moved aside first and removed after), on failure it is removed."""
    directory = check_new_directory(directory, overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; the result should be like any new dir
    try:
        yield staging
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
        os.replace(staging, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
