"""Memory between the phases of a fit: freed memory handed back to the operating system, and the
garbage collector paused while a million small objects are made."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
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


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while making objects by the million that live on (a
    Path and a record per image): it ran over all of them again and again and found nothing to
    free. A million records read back from JSON took 12.8 s with it, 8.7 s without; the search of
    100,000 images 7.5 s, 7.0 s (benchmarks/bench_search.py)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
