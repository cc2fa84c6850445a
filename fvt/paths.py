"""Where a command may write: one check shared by every command that takes an output location.

D1 (issue 17): a read-only ``--output``, or an ``--output`` that is an existing file, used to end in a
traceback at the first write, after the work was done. Commands call these helpers before any work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .errors import UsageError

PathLike = Union[str, Path]


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable(base: Path, path: Path, flag: str) -> None:
    """``base`` (the first existing folder at or above where ``path`` goes) must take new entries."""
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is a file, so no folder can be made under it; choose another {flag}")
    if not os.access(base, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_fs(base) else "permission denied"
        raise UsageError(f"{flag} {path}: cannot write in {base} ({why}); choose a writable {flag}")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_output_dir(path: PathLike, flag: str = "--output") -> Path:
    """An output FOLDER (made later if missing): refuse a file in its place or a place that cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder; choose a folder for {flag}")
    _check_writable(_nearest_existing(path), path, flag)
    return path


def check_output_file(path: PathLike, flag: str = "--output") -> Path:
    """An output FILE (written or replaced later): refuse a folder in its place or a place that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; name a file for {flag}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: the file cannot be replaced (permission denied or read-only)")
    _check_writable(_nearest_existing(path.parent), path, flag)
    return path
