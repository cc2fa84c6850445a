"""Errors a user can act on, and the exit codes of every `fvt` command.

Anything raised as an ``FvtError`` reaches the user as one line (``fvt: error: ...``) on stderr
instead of a traceback; the CLI maps it to ``exit_code``.

Exit codes (the same for every command):
  0   ok
  1   a check failed (the command ran, and what it checked did not hold)
  2   usage or data error (bad flag or value, unusable data/checkpoint/output, disk full)
  3   training diverged (non-finite loss, validation loss or weights)
  130 interrupted (Ctrl-C / SIGINT); a training saved last.pt first
"""

from __future__ import annotations

import difflib
from typing import Iterable

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class FvtError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_code = EXIT_USAGE


class UsageError(FvtError):
    """A bad flag, config key or value."""


class ArgumentError(UsageError, TypeError):
    """A keyword argument the called function does not take; also a TypeError, which is what Python
    and libraries calling fvt (timm's create_model) raise and expect for that."""


class DataError(FvtError):
    """A data folder that cannot be used (missing, empty class, fewer than two classes...)."""


class CheckpointError(FvtError):
    """A checkpoint that is missing, unsafe to unpickle, malformed, or made for another model."""


class OutputError(FvtError):
    """An output that cannot be written: read-only, a file where a folder belongs, the disk full."""


class CheckFailed(FvtError):
    """The command ran and what it checked does not hold (exit 1)."""

    exit_code = EXIT_CHECK_FAILED


class TrainingDiverged(FvtError):
    """A non-finite loss, validation loss or weights: the run stops and says what it kept (exit 3)."""

    exit_code = EXIT_DIVERGED


def choice_message(flag: str, value, choices: Iterable[str]) -> str:
    """The one way fvt words a value outside a list: ``--flag 'x' is not one of a, b, c; did you mean 'b'?``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{flag} {str(value)!r} is not one of {', '.join(choices)}{hint}"
