"""Writing outputs and caches so that nothing is lost or half-written, and reading caches back safely.

Every file and directory the library writes goes through this module:

* **Staging next to the target.** Contents are written into a hidden sibling, ``.<name>.tmp-<pid>-<random>``,
  flushed to disk (fsync of every file and directory), given the user's normal permissions (``0666`` / ``0777``
  less the umask) and then renamed into place in one step. A reader sees the old output or the new one, never
  half of one. On failure the staging is removed.
* **Nothing replaced unasked.** Without ``overwrite`` the final step is an atomic no-replace: a hard link for a
  file (``link`` fails if the name exists) and a rename for a directory (``rename`` onto a non-empty directory
  fails). Two processes racing for one output: one wins, the other raises :class:`OutputExistsError` and its
  work is dropped, never mixed in. With ``overwrite`` the old output is renamed aside, the new one renamed in,
  then the old one removed.
* **Interrupted runs leave nothing behind for good.** A staging or set-aside name embeds its process id; the next
  write to the same target removes those of processes that are gone (and puts a set-aside output back when the
  run died before its replacement arrived).
* **Locations checked before any work.** :func:`check_new_file` and :func:`check_new_directory` refuse an output
  that exists (without ``overwrite``), the current directory or one of its ancestors, and a place where no file
  can be created (probed by creating one: permission bits do not stop root, an immutable directory does).
  Errors while writing (a full disk, a location made read-only meanwhile) raise :class:`WriteFailedError`
  naming the target; nothing is published then.
* **Caches verify themselves.** A cached directory carries a manifest of every file's size, modification time
  and CRC-32 (:func:`verify_manifest`: a changed file is re-read and checked); a cached file carries a trailer with its payload's size and CRC-32
  (:func:`write_cache_file` / :func:`read_cache_file`). A damaged cache is rebuilt with one warning line.
  :func:`file_lock` serialises processes filling the same cache.

The layer is rank-agnostic: it writes what it is asked to; deciding which process of a distributed job writes
is the caller's business.

Fault injection for the test suite: ``SUBCLONE_VIZ_FAULT=<point>:<action>`` makes every write reach ``point``
(``writing``: half a file written; ``staged``: staging complete, not yet published) and then ``kill`` itself
with SIGKILL or fail with ``enospc`` (an ``OSError(ENOSPC)``). ``SUBCLONE_VIZ_FAULT_TARGET=<name>`` limits it to
targets of that file or directory name.

Example::

    >>> from subclone_viz._atomic import check_new_directory, staged_directory, write_file
    >>> out = check_new_directory("runs/a", overwrite=False)       # before any work
    >>> with staged_directory(out) as staging:
    ...     _ = (staging / "summary.json").write_text("{}")
    >>> sorted(p.name for p in out.iterdir())   # had the block raised, runs/a would not exist
    ['summary.json']
    >>> write_file("runs/a.txt", "done\\n").read_text()
    'done\\n'
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError

log = logging.getLogger("subclone_viz")

MANIFEST = ".subclone_viz-manifest.json"
_MANIFEST_FORMAT = 1
_CACHE_MAGIC = b"SVZCACHE1"
_CACHE_TRAILER = struct.Struct("<9sQI")  # magic, payload size, payload CRC-32
_CHUNK = 1 << 24
# Errors of the place written to, not of the program: reported as one line naming the target.
_PLACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG})
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


class OutputExistsError(UserError, FileExistsError):
    """The output exists (or another process wrote it first) and ``overwrite`` was not asked for."""


class OutputLocationError(UserError, PermissionError):
    """The output cannot be written where it was asked for: not writable, or a place that must not be replaced."""


class WriteFailedError(UserError, OSError):
    """Writing failed part way (a full disk, a location made read-only); nothing was published."""


class DamagedFileError(UserError, ValueError):
    """A file read back is not what it must be (truncated, damaged, hand-edited, or of another kind)."""


# --------------------------------------------------------------------------------------------------------
# Checking a location before any work


def _resolved(path: str | os.PathLike) -> Path:
    """The absolute path with symlinks followed, so that an output written through a link lands where it
    points instead of replacing the link."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _check_not_current_directory(target: Path, shown: str | os.PathLike) -> None:
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputLocationError(
            f"{str(shown)!r} is the current directory or one of its ancestors; name a new directory for the "
            f"output, e.g. {os.path.join(str(shown), 'out')!r}"
        )


def _probe_writable(target: Path, shown: str | os.PathLike) -> None:
    """Create and remove a file where ``target`` will be made (its nearest existing ancestor directory)."""
    place = target.parent
    while not place.exists():
        place = place.parent
    if not place.is_dir():
        raise OutputLocationError(f"cannot write {str(shown)!r}: {place} is a file, not a directory")
    probe = place / f".subclone_viz-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise OutputLocationError(
            f"cannot write {str(shown)!r}: {place} is not writable ({error.strerror}); choose another location"
        ) from error


def check_new_file(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved path of a file output, or an error if writing it would replace something unasked
    (:class:`OutputExistsError`) or cannot succeed (:class:`OutputLocationError`). Call before any work."""
    target = _resolved(path)
    if target.is_dir():
        raise OutputExistsError(f"{str(path)!r} is a directory; give a file name")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    _probe_writable(target, path)
    return target


def check_new_directory(directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """The resolved path of a directory output, or an error if writing it would replace something unasked
    (:class:`OutputExistsError`) or cannot succeed (:class:`OutputLocationError`). Call before any work."""
    target = _resolved(directory)
    _check_not_current_directory(target, directory)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{str(directory)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{str(directory)!r} is not empty; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    _probe_writable(target, directory)
    return target


# --------------------------------------------------------------------------------------------------------
# Staging and publishing


def _umask() -> int:
    """The process's umask; read from /proc where possible, since setting it to read it races other threads."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _staging_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(target: str | os.PathLike) -> list[Path]:
    """Remove the staging and set-aside siblings of ``target`` left by processes that are gone; a set-aside
    output whose replacement never arrived is put back. Returns what was removed or restored."""
    target = _resolved(target)
    if not target.parent.is_dir():
        return []
    handled = []
    for entry in sorted(target.parent.iterdir()):
        match = _STAGING.match(entry.name)
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        if match["kind"] == "old" and not os.path.lexists(target):
            os.rename(entry, target)  # the run died between setting the old output aside and publishing
        else:
            _remove(entry)
        handled.append(entry)
    if handled:
        log.warning("removed %d leftover(s) of interrupted writes to %s", len(handled), target)
    return handled


def _fault(point: str, target: Path) -> None:
    """The fault-injection hook of the test suite (see the module docstring); nothing unless the variable is set."""
    wanted = os.environ.get("SUBCLONE_VIZ_FAULT")
    if not wanted or wanted.partition(":")[0] != point:
        return
    if os.environ.get("SUBCLONE_VIZ_FAULT_TARGET", target.name) != target.name:
        return
    action = wanted.partition(":")[2]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    raise ValueError(f"SUBCLONE_VIZ_FAULT={wanted!r}: the action must be kill or enospc")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_staging(staging: Path) -> None:
    """Normal permissions and everything on disk before the rename makes it visible."""
    mask = _umask()
    if staging.is_dir():
        for root, dirs, files in os.walk(staging):
            os.chmod(root, 0o777 & ~mask)  # mkdtemp-like private directories become ordinary ones
            for name in files:
                file = Path(root, name)
                os.chmod(file, 0o666 & ~mask)  # e.g. safetensors writes its files 0600
                _fsync_path(file)
            for name in dirs:
                os.chmod(Path(root, name), 0o777 & ~mask)
            _fsync_path(Path(root))
    else:
        os.chmod(staging, 0o666 & ~mask)
        _fsync_path(staging)


def _place_error(error: OSError, target: Path, shown: str | os.PathLike) -> OSError:
    if isinstance(error, (OutputExistsError, OutputLocationError, WriteFailedError)):
        return error
    if error.errno in _PLACE_ERRNOS:
        failed = WriteFailedError(f"could not write {str(shown)!r} ({error.strerror}); nothing was written there")
        failed.errno = error.errno
        return failed
    return error


def _publish_new(staging: Path, target: Path, shown: str | os.PathLike) -> None:
    """Move ``staging`` to ``target`` unless something is there (a non-empty directory, or any file)."""
    if staging.is_dir():
        try:
            os.rename(staging, target)  # replaces only an empty directory, atomically
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise OutputExistsError(
                    f"{str(shown)!r} was written by another process meanwhile; nothing was replaced and this "
                    f"output was not saved (pass overwrite=True to replace it)"
                ) from error
            raise
        return
    try:
        os.link(staging, target)  # fails when the name exists: no-replace, atomically
    except FileExistsError as error:
        raise OutputExistsError(
            f"{str(shown)!r} was written by another process meanwhile; nothing was replaced and this output was "
            f"not saved (pass overwrite=True to replace it)"
        ) from error
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        # A filesystem without hard links: check, then rename (not atomic against a concurrent writer).
        if os.path.lexists(target):
            raise OutputExistsError(f"{str(shown)!r} exists; pass overwrite=True to replace it") from error
        os.rename(staging, target)
        return
    os.unlink(staging)


def _publish_replacing(staging: Path, target: Path, shown: str | os.PathLike) -> None:
    if not staging.is_dir():
        os.replace(staging, target)  # atomic for a file
        return
    old = None
    if os.path.lexists(target):
        old = _staging_name(target, "old")
        os.rename(target, old)
    _publish_new(staging, target, shown)
    if old is not None:
        _remove(old)


@contextmanager
def _staged(
    target: Path, shown: str | os.PathLike, overwrite: bool, directory: bool, manifest: bool = False
) -> Iterator[Path]:
    clean_stale(target)
    staging = _staging_name(target, "tmp")
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if directory:
                staging.mkdir()
            yield staging
            if manifest:
                write_manifest(staging)
            _finish_staging(staging)
            _fault("staged", target)
            if overwrite:
                _publish_replacing(staging, target, shown)
            else:
                _publish_new(staging, target, shown)
            _fsync_path(target.parent)
        except OSError as error:
            raise _place_error(error, target, shown) from error
    finally:
        if os.path.lexists(staging):
            _remove(staging)


@contextmanager
def staged_directory(directory: str | os.PathLike, overwrite: bool = False, manifest: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory to fill; on success it becomes ``directory`` in one rename.

    Args:
        directory: the output; a symlink is followed (the output lands where it points).
        overwrite: replace an existing non-empty directory; without it a non-empty one (also one another
            process published meanwhile) raises :class:`OutputExistsError`.
        manifest: record every file's size and CRC-32 (a cache that :func:`verify_manifest` checks).
    """
    target = check_new_directory(directory, overwrite)
    with _staged(target, directory, overwrite, directory=True, manifest=manifest) as staging:
        yield staging


@contextmanager
def staged_file(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging path to write one file to (by name, e.g. for a library that takes a path); on success
    it becomes ``path`` in one step. Without ``overwrite`` an existing ``path`` raises :class:`OutputExistsError`."""
    target = check_new_file(path, overwrite)
    with _staged(target, path, overwrite, directory=False) as staging:
        yield staging


def write_file(path: str | os.PathLike, data: bytes | str, overwrite: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``. See :func:`staged_file`."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with staged_file(path, overwrite) as staging:
        with open(staging, "wb") as file:
            half = len(payload) // 2
            file.write(payload[:half])
            file.flush()
            _fault("writing", staging.with_name(Path(path).name))
            file.write(payload[half:])
    return Path(path).expanduser()


def publish_directory(staging: str | os.PathLike, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Publish a staging directory that the caller named and filled itself (e.g. one that several processes of a
    distributed job write into): normal permissions, fsync, then the same rename as :func:`staged_directory`."""
    staging, target = Path(staging), _resolved(directory)
    try:
        _finish_staging(staging)
        _fault("staged", target)
        (_publish_replacing if overwrite else _publish_new)(staging, target, directory)
        _fsync_path(target.parent)
    except OSError as error:
        raise _place_error(error, target, directory) from error
    return Path(directory)


def read_json(path: str | os.PathLike, kind: type = dict) -> Any:
    """The JSON document in ``path``, which must be a ``kind`` (dict or list); else :class:`DamagedFileError`
    naming the file and what is wrong."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DamagedFileError(f"{path} is missing") from error
    except OSError as error:  # a directory in its place, or a file where its directory should be
        raise DamagedFileError(f"{path} cannot be read as a file ({error.strerror})") from error
    except (UnicodeDecodeError, ValueError) as error:
        raise DamagedFileError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(value, kind):
        raise DamagedFileError(f"{path} holds a JSON {type(value).__name__}, not a {kind.__name__}")
    return value


# --------------------------------------------------------------------------------------------------------
# Caches: a lock to fill them, and checks that they are whole


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock named after ``path`` (``.<name>.lock`` beside it) while filling that cache, so that
    a second process waits and then finds it filled. Not re-entrant within one process."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.with_name(f".{target.name}.lock"), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _listing(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: str | os.PathLike) -> None:
    """Record the size, modification time and CRC-32 of every file under ``directory`` in its manifest."""
    directory = Path(directory)
    files = {}
    for path in _listing(directory):
        stat = path.stat()
        files[path.relative_to(directory).as_posix()] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "crc32": _crc32(path),
        }
    (directory / MANIFEST).write_text(json.dumps({"format": _MANIFEST_FORMAT, "files": files}, indent=1))


def verify_manifest(directory: str | os.PathLike) -> str | None:
    """None when ``directory`` holds exactly what its manifest records; else what is wrong, in a few words
    (``"missing"`` when there is no such directory).

    A file of the recorded size and modification time is taken as written (a stat, no reading: a loaded
    parent's gigabytes are not read twice); any other file is read and checked against its CRC-32, so a
    truncated, edited or copied file is caught or confirmed. Damage that keeps the modification time (bit rot)
    is left to the filesystem.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return "missing"
    try:
        recorded = json.loads((directory / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable manifest (written by an older version, or damaged)"
    names = {p.relative_to(directory).as_posix(): p for p in _listing(directory)}
    if set(names) != set(recorded):
        missing, extra = sorted(set(recorded) - set(names)), sorted(set(names) - set(recorded))
        return f"files differ from its manifest (missing {missing}, unexpected {extra})"
    for name, path in names.items():
        stat, expected = path.stat(), recorded[name]
        if stat.st_size != expected["size"]:
            return f"{name} has {stat.st_size:,} bytes, {expected['size']:,} were written"
        if stat.st_mtime_ns != expected.get("mtime_ns") and _crc32(path) != expected["crc32"]:
            return f"{name} does not match the checksum recorded when it was written"
    return None


def write_cache_file(path: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` followed by a trailer of its size and CRC-32, atomically, replacing what is there."""
    trailer = _CACHE_TRAILER.pack(_CACHE_MAGIC, len(payload), zlib.crc32(payload))
    return write_file(path, payload + trailer, overwrite=True)


def read_cache_file(path: str | os.PathLike) -> bytes | None:
    """The payload of a file written by :func:`write_cache_file`, or None if there is none; a damaged one
    raises :class:`DamagedFileError` saying what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:  # a directory in its place
        raise DamagedFileError(f"{path} cannot be read as a file ({error.strerror})") from error
    if len(data) < _CACHE_TRAILER.size:
        raise DamagedFileError(f"{path} is truncated ({len(data)} bytes)")
    magic, size, crc = _CACHE_TRAILER.unpack(data[-_CACHE_TRAILER.size :])
    payload = data[: -_CACHE_TRAILER.size]
    if magic != _CACHE_MAGIC or size != len(payload):
        raise DamagedFileError(f"{path} is truncated or not a subclone_viz cache file")
    if zlib.crc32(payload) != crc:
        raise DamagedFileError(f"{path} does not match the checksum recorded when it was written")
    return payload


def note_rebuild(what: str, problem: str) -> None:
    """The one line said when a damaged cache is rebuilt; ``problem`` names the file and what is wrong."""
    log.warning("%s; rebuilding the cached %s", problem, what)
