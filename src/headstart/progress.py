"""What a person waiting sees: a line when each phase starts (with how long it should take, where
that is known), a bar while it runs, one line per fine-tuning epoch, and nothing when switched off.

Whoever owns the output switches it once: the command line (off with ``-q``, and off when standard
error is not a terminal unless ``--progress`` asks), or the estimator's ``progress`` parameter for
the length of a ``fit``, with :func:`shown` (its default, "auto", is on where a person watches).
The phases deep in the call stack ask :func:`enabled` rather than every signature carrying a flag. Under torchrun only rank 0 speaks
(the others' phases are the same).
"""

from __future__ import annotations

import contextvars
import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from .errors import DataError

_SHOWN: contextvars.ContextVar[bool] = contextvars.ContextVar("headstart_progress", default=False)
AUTO = "auto"


def wanted(setting) -> bool:
    """A ``progress`` setting as a switch: True, False, or "auto" (as Keras' ``verbose="auto"``): on
    where a person is watching, a terminal or a Jupyter notebook (whose standard error is no
    terminal), and off in a log file, a pipe or a test run."""
    if isinstance(setting, str) and setting == AUTO:
        return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules
    if not isinstance(setting, str) and setting in (True, False):
        return bool(setting)
    raise DataError(f"progress={setting!r} must be True, False or 'auto' (shown where a person is watching: a terminal or a notebook).")


def enabled() -> bool:
    return _SHOWN.get() and os.environ.get("RANK", "0") == "0"


@contextmanager
def shown(on: bool | str) -> Iterator[None]:
    """Show phases and bars (``on``: True, False or "auto") or not, until the block ends."""
    token = _SHOWN.set(wanted(on))
    try:
        yield
    finally:
        _SHOWN.reset(token)


def announce(text: str, seconds: float | None = None) -> None:
    """One line on standard error, above any bar, saying what starts now (and for about how long)."""
    if enabled():
        tqdm.write(f"{text}{_about(seconds)}", file=sys.stderr)


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it") -> tqdm:
    """A bar that shows elapsed time and the time left (nothing when switched off); it clears itself when done."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=not enabled(), file=sys.stderr, dynamic_ncols=True)


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _about(seconds: float | None) -> str:
    return "" if seconds is None else f" (about {format_seconds(seconds)})"


__all__ = ["AUTO", "announce", "bar", "enabled", "format_seconds", "shown", "wanted"]
