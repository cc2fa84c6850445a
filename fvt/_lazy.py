"""Attributes of a package imported on first use (PEP 562), so importing the package is cheap.

``fvt --help`` and every usage error answer without importing torch: every package ``__init__``
on the way to a command's module stays light and names what it offers in a table instead."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_attributes(namespace: Dict[str, Any], table: Dict[str, str]) -> Tuple[Callable[[str], Any],
                                                                             Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for the package whose ``globals()`` is ``namespace``; ``table`` maps a
    public name to the module defining it (``".registry"`` is resolved against the package)."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> List[str]:
        return sorted({n for n in namespace if not n.startswith("_")} | set(table))

    return __getattr__, __dir__
