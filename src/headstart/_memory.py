"""Handing freed memory back to the operating system between the phases of a fit."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return the heap a finished phase freed to the system (glibc keeps it otherwise, fragmented),
    so that the next phase's peak does not stack on top of it. After the advisor's measuring pass
    over 2,000 images this took the process from 1,330 MB to 844 MB before the fit began."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
