"""Optional parts of fvt, installed as pip extras, and the one-line hint when one is missing.

The main job (``fvt train``, ``fvt eval``, ``fvt predict`` with PyTorch weights, safetensors and
TorchScript exports) needs only the hard dependencies. ONNX export/inference and TensorBoard
logging are extras (``pip install 'fastervit-toolkit[onnx]'``); the table is in
docs/dependencies.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UsageError

DIST = "fastervit-toolkit"


class MissingExtra(UsageError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def install_hint(extra: str) -> str:
    return f"pip install '{DIST}[{extra}]'"


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingExtra: '<purpose> needs <module>: pip install ...[extra]'."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but broken inside: show the real error
        raise MissingExtra(f"{purpose} needs {module.split('.')[0]}, which is not installed: "
                           f"{install_hint(extra)}") from None


def available(module: str) -> bool:
    """True when ``module`` imports (for tests and optional features that degrade)."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
