"""The keyword arguments of the Python API checked like the flags: ``check_arguments``.

``fvt.train`` goes through a Config (and ``fvt.validation``); ``fvt.evaluate`` / ``predict`` /
``export``, ``fvt.Classifier`` and ``fvt.create_model`` take their arguments directly, so they are
checked here, against the same bounds the flags have, before any work: one ``UsageError`` naming
``function(name=value)`` and what would work, instead of a TypeError deep inside.
"""

from __future__ import annotations

import os
from typing import Any

from .config.fields import Range
from .errors import UsageError

INTEGERS = {"batch_size": "[1, inf)", "workers": "[0, 256]", "topk": "[1, inf)", "num_classes": "[1, 1000000]",
            "in_chans": "[1, 64]"}
NUMBERS = {"drop_path_rate": "[0, 1)", "drop_rate": "[0, 1)"}  # as --drop-path-rate, --drop-rate
PATHS = ("checkpoint", "data", "output", "path")
STRINGS = ("device", "model", "format", "model_name")
BOOLEANS = ("ema", "progress", "pretrained_raw")
IMG_SIZE = Range.parse("[1, 4096]")  # as --img-size


def argument_problem(name: str, value: Any) -> str:
    """What is wrong with ``value`` for the argument ``name`` ("" when nothing is, or it is not known)."""
    if name in INTEGERS:
        rng = Range.parse(INTEGERS[name])
        if isinstance(value, bool) or not isinstance(value, int) or value not in rng:
            return f"give an integer in {rng}"
    elif name in NUMBERS:
        rng = Range.parse(NUMBERS[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in rng:
            return f"give a number in {rng}"
    elif name in PATHS:
        if not isinstance(value, (str, os.PathLike)):
            return "give a path (str or pathlib.Path)"
        if not str(value).strip():
            return "give a non-empty path"
    elif name in STRINGS and not isinstance(value, str):
        return "give a string"
    elif name in BOOLEANS and not isinstance(value, bool):
        return "give True or False (or leave it out)"
    elif name == "img_size":
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not 1 <= len(items) <= 2 or any(isinstance(v, bool) or not isinstance(v, int) or v not in IMG_SIZE
                                           for v in items):
            return f"give one or two integers in {IMG_SIZE} (N, or (H, W))"
    return ""


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr when short and on one line, else its type."""
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"<{type(value).__name__}>"


def check_arguments(function: str, **values: Any) -> None:
    """Raise one UsageError for the first bad argument; None means "not given" and passes."""
    for name, value in values.items():
        problem = "" if value is None else argument_problem(name, value)
        if problem:
            raise UsageError(f"{function}({name}={shown(value)}): {problem}")
