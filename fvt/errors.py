"""Errors a user can act on.

Anything raised as an ``FvtError`` reaches the user as one line (``fvt: error: ...``)
instead of a traceback; the CLI maps it to ``exit_code``.
"""


class FvtError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_code = 2


class UsageError(FvtError):
    """A bad flag, config key or value."""


class DataError(FvtError):
    """A data folder that cannot be used (missing, empty class, fewer than two classes...)."""


class CheckpointError(FvtError):
    """A checkpoint that is missing, unsafe to unpickle, or made for another model."""
