"""The exception hierarchy: every error headstart raises on purpose is a HeadstartError.

Messages are one sentence that says what was expected, what was found, and how to fix it; the CLI
prints them as a single line.
"""

# A logged warning's record attribute (``log.warning(..., extra={SHOWN_IN_SUMMARY: True})``): a fit's
# summary repeats this warning, so the CLI, which prints the summary, does not also log it.
SHOWN_IN_SUMMARY = "headstart_in_summary"


class HeadstartError(Exception):
    """Base class for errors raised by headstart."""


class DataError(HeadstartError, ValueError):
    """The images, labels or dataset layout cannot be used as given."""


class BackboneError(HeadstartError, LookupError):
    """A backbone is unknown, or its weights cannot be found or loaded."""


class ModelFileError(HeadstartError, OSError):
    """A saved model directory is missing, incomplete or from an incompatible version."""


def one_line(reason) -> str:
    """An error (or its text) as the single line the CLI prints and the server answers; an error
    without a message is named by its type."""
    text = str(reason).strip() or (type(reason).__name__ if isinstance(reason, BaseException) else "")
    return " ".join(text.split())


def check_choice(name: str, value, allowed) -> None:
    """Raise a DataError naming ``value``, the allowed values and the nearest one, unless allowed."""
    if value in allowed:
        return
    import difflib  # here, not at the top: the command line imports this module before anything else

    close = difflib.get_close_matches(str(value), [str(a) for a in allowed if a is not None], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown {name} {value!r}{hint}; use one of {', '.join(map(repr, allowed))}.")
