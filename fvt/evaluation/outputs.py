"""Where eval / predict / export may write: checked once, before any work (issue 17 D1).

A read-only location, an output folder that is an existing file or an output file that is an
existing folder is one ``fvt: error:`` line (exit 2), not a traceback after minutes of work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import UsageError


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path: Union[str, Path], kind: str, flag: str = "--output") -> Path:
    """``kind``: "dir" (a folder fvt creates or fills) or "file" (a file fvt creates or replaces)."""
    path = Path(path).expanduser()
    if kind == "dir" and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is an existing file; give a folder")
    if kind == "file" and path.is_dir() and path.suffix.lower() != ".mlpackage":
        raise UsageError(f"{flag} {path} is an existing folder; give a file name")
    base = _nearest_existing(path if kind == "dir" else path.parent)
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is a file, so nothing can be created under it")
    target = path if (kind == "dir" and path.exists()) else base
    if not os.access(target, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {target} is not writable; choose another location")
    return path
