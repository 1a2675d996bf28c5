"""Lists in messages: every one a person reads is cut, so that 5,000 class names do not fill a screen."""

from __future__ import annotations


def shortened(values, limit: int = 12) -> str:
    """The first ``limit`` of ``values``, comma-separated, and how many more there are."""
    values = list(values)
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")
