"""The exception hierarchy: every error headstart raises on purpose is a HeadstartError.

Messages are one sentence that says what was expected, what was found, and how to fix it; the CLI
prints them as a single line.
"""


class HeadstartError(Exception):
    """Base class for errors raised by headstart."""


class DataError(HeadstartError, ValueError):
    """The images, labels or dataset layout cannot be used as given."""


class BackboneError(HeadstartError, LookupError):
    """A backbone is unknown, or its weights cannot be found or loaded."""


class ModelFileError(HeadstartError, OSError):
    """A saved model directory is missing, incomplete or from an incompatible version."""
