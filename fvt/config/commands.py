"""``fvt configs``: the training recipes that ship with fvt.

``fvt configs`` lists them, one line each; ``fvt configs show NAME`` prints one as it is (comments
included), ready to copy: ``fvt configs show finetune > my.yaml``. ``fvt train --config NAME`` uses
one by name. Exit codes: 0, 2 (an unknown name).
"""

from __future__ import annotations

import argparse

from .recipes import list_recipes, recipe_path, recipe_paths


def add_configs_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="configs_command", metavar="SUBCOMMAND")
    sub.add_parser("list", help="List the recipes, one line each (the default).")
    s = sub.add_parser("show", help="Print a recipe (YAML, with the comments that explain its values).")
    s.add_argument("name", metavar="NAME", help="A recipe name (see `fvt configs`).")


def run_configs(args: argparse.Namespace) -> int:
    if getattr(args, "configs_command", None) == "show":
        print(recipe_path(args.name).read_text(encoding="utf-8"), end="")
        return 0
    recipes = list_recipes()
    width = max(map(len, recipes), default=0)
    for name, what in recipes.items():
        print(f"{name:<{width}}  {what}")
    where = next(iter(recipe_paths().values())).parent if recipes else "(none installed)"
    print(f"\nuse: fvt train --data DIR --config NAME (flags override it); fvt configs show NAME prints one. "
          f"Files: {where}")
    return 0
