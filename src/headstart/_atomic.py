"""Atomic writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, Iterator

from ._text import shortened
from .errors import DataError

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        give_usual_mode(Path(tmp))
        os.replace(tmp, target)
        _fsync_folder(target.parent)  # the rename itself, else a crash can bring back the old file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def give_usual_mode(path: Path) -> None:
    """Files as open() would make them (0644 under the usual umask): some writers (safetensors,
    mkstemp) make theirs private, which a model others should read must not be."""
    os.chmod(path, 0o666 & ~_UMASK)


def write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


_UNWRITABLE_CACHES: set[Path] = set()
_UNWRITABLE_LOCK = threading.Lock()


def cache_write_failed(root: Path, exc: OSError) -> None:
    """Say once per process that the cache folder ``root`` cannot be written. A cache that cannot
    keep codes, image hashes or plans costs the next run time, nothing else, so the fit goes on;
    each of its stores saying so (a dozen lines for one cause) said it too often."""
    root = Path(root).absolute()
    with _UNWRITABLE_LOCK:
        if root in _UNWRITABLE_CACHES:
            return
        _UNWRITABLE_CACHES.add(root)
    log.warning(
        "the cache folder %s cannot be written (%s): codes, image hashes and plans are not kept for the next run; "
        "set HEADSTART_CACHE to a writable folder, or pass --no-cache", root, exc,
    )


def check_replaceable(target: Path, ours: Collection[str], what: str) -> None:
    """Refuse, before any work, a ``target`` that :func:`atomic_directory` must not replace: a file,
    a folder holding anything but the names in ``ours`` (what the writer of ``what`` puts there; so
    ``-o`` naming the photos' own folder, or a thesis's, is refused instead of deleted), or one that
    cannot be written, or the folder this process runs in (or one holding it: it cannot be swapped)."""
    target, absolute = Path(target), Path(os.path.abspath(target))
    if absolute == Path.cwd() or absolute in Path.cwd().parents:
        raise DataError(f"{target} is the current folder or holds it, and writing a {what} replaces the folder as a whole; run from outside it (cd ..) and give its path.")
    if target.exists() and not target.is_dir():
        raise DataError(f"{target} is a file; give a folder to write the {what} to.")
    if target.is_dir():
        foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in ours and not entry.name.startswith("."))
        if foreign:
            raise DataError(f"{target} holds {shortened(foreign, 3)}, which writing a {what} there would delete; give a new or empty folder.")
    try:
        absolute.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=absolute.parent, prefix=f".{absolute.name}.", suffix=".probe"))
    except OSError as exc:
        raise DataError(f"cannot write the {what} to {target} ({exc.strerror or exc}); give a folder you can write to.") from None


@contextmanager
def atomic_directory(target: Path, ours: Collection[str], what: str) -> Iterator[Path]:
    """Yield an empty staging folder; on success it takes the place of ``target`` as a whole
    (``target`` is first checked by :func:`check_replaceable` with ``ours`` and ``what``).

    The swap uses Linux's renameat2(RENAME_EXCHANGE) where available, so there is no moment at which
    ``target`` is missing; elsewhere two renames, and a crash between them leaves the previous
    version beside ``target`` as ``.NAME.old-*``.
    """
    target = Path(os.path.abspath(target))  # "runs/x/.." has a parent to stage in; "." is refused
    check_replaceable(target, ours, what)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes folders private
        # On disk before the swap: the swap deletes the previous version, and the files written into
        # staging may still be only in the page cache (a crash would leave the new run's names with
        # empty or partial contents, and no old run to go back to).
        _fsync_tree(staging)
        previous = _swap_in(staging, target)
        _fsync_folder(target.parent)  # the swap is on disk before the previous version goes
        if previous is not None:
            shutil.rmtree(previous)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Put ``staging`` in ``target``'s place; the folder now holding the previous version, if any."""
    if target.exists() and _exchange(staging, target):
        return staging
    if target.exists():
        backup = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.rmdir(backup)
        os.rename(target, backup)
        os.rename(staging, target)
        return backup
    os.rename(staging, target)
    return None


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(os.path.join(folder, name))
        _fsync_folder(Path(folder))


def _fsync_file(path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a folder's entries (a rename into it, a new file) durable. POSIX only: Windows cannot
    open a folder, and its renames need no such step."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and /proc-like ones) refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any worker thread exists.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the platform cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
