"""Where eval / predict / export may write: checked once, before any work (issue 17 D1).

The checks themselves are the shared ones of ``fvt.paths`` (also used by ``fvt train``); this adds what
only deployment needs: a CoreML ``.mlpackage`` is a folder that is written as one output "file"."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from ..paths import check_output_dir, check_output_file


def check_output(path: Union[str, Path], kind: str, flag: str = "--output") -> Path:
    """``kind``: "dir" (a folder fvt creates or fills) or "file" (a file fvt creates or replaces)."""
    path = Path(path).expanduser()
    if kind == "dir" or path.suffix.lower() == ".mlpackage":
        return check_output_dir(path, flag)
    return check_output_file(path, flag)
