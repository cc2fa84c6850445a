"""Training recipes shipped inside fvt (``fvt/recipes/NAME.yaml``), found by name.

``--config finetune`` reads the recipe ``finetune``; ``--config FILE.yaml`` reads that file. A value
that is both an existing file and a recipe name reads the file, and says so. ``fvt configs`` lists
the recipes (``list_recipes``: name -> the first line of the file's leading comment) and
``fvt configs show NAME`` prints one.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Union

from ..errors import UsageError

# a folder of plain YAML files installed with the package (pyproject.toml package-data)
RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"


def recipe_paths() -> Dict[str, Path]:
    """name -> file, sorted by name."""
    return {p.stem: p for p in sorted(RECIPE_DIR.glob("*.yaml"))}


def summary(path: Path) -> str:
    """The first line of a recipe's leading comment: what it is for."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def list_recipes() -> Dict[str, str]:
    return {name: summary(p) for name, p in recipe_paths().items()}


def unknown_recipe(value: str, flag: str, files_too: bool = True) -> UsageError:
    names = list(recipe_paths())
    close = difflib.get_close_matches(Path(str(value)).stem, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    what = "no such file, and not a recipe name" if files_too else "no recipe of that name"
    return UsageError(f"{flag} {value}: {what}; {hint}recipes: "
                      f"{', '.join(names) or '(none installed)'} (`fvt configs` describes them)")


def _as_name(value: str) -> Optional[str]:
    """The recipe a value would name: ``finetune`` or ``finetune.yaml``, without a folder."""
    if "/" in value or os.sep in value:
        return None
    return value[:-len(".yaml")] if value.endswith(".yaml") else value


def recipe_path(name: str, flag: str = "fvt configs show") -> Path:
    """The file of recipe ``name`` (``finetune`` or ``finetune.yaml``)."""
    path = recipe_paths().get(_as_name(str(name)) or "")
    if path is None:
        raise unknown_recipe(name, flag, files_too=False)
    return path


def resolve_config_file(value: Union[str, Path], flag: str = "--config") -> Path:
    """The YAML file ``--config VALUE`` means: an existing file first, else a recipe by name."""
    recipes = recipe_paths()
    name = _as_name(str(value))
    p = Path(value).expanduser()
    if p.is_file():
        if name in recipes:
            print(f"fvt: note: {flag} {value}: reading the file {p.resolve()}, not fvt's recipe '{name}' "
                  f"(of the same name)", file=sys.stderr)
        return p
    if name in recipes:
        return recipes[name]
    stem = Path(str(value)).stem
    if stem in recipes and Path(str(value)).suffix in (".yaml", ".yml"):  # e.g. the old configs/finetune.yaml
        raise UsageError(f"{flag} {value}: no such file; the recipe ships with fvt, by name: {flag} {stem}")
    raise unknown_recipe(str(value), flag)
