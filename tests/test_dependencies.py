"""pyproject.toml tells the truth: every package fvt imports is declared (as a hard dependency or an
extra), and every hard dependency is imported by fvt."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DIST_OF = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml", "mlflow": "mlflow-skinny",
           "torch_tensorrt": "torch-tensorrt", "pytorch_grad_cam": "grad-cam"}
# modules of torch that need a distribution of their own
SUBMODULE_DIST = {"torch.utils.tensorboard": "tensorboard"}


def _imports() -> dict:
    """distribution -> files of fvt/ that import it (relative imports and the stdlib left out)."""
    found: dict = {}
    for path in (REPO / "fvt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require" and node.args
                  and isinstance(node.args[0], ast.Constant)):  # fvt.extras.require("onnx", ...)
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "fvt":
                    continue
                dist = next((d for m, d in SUBMODULE_DIST.items() if name == m or name.startswith(m + ".")),
                            DIST_OF.get(top, top))
                found.setdefault(dist.lower(), set()).add(str(path.relative_to(REPO)))
    return found


def _names(requirements) -> set:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_every_import_is_declared_and_every_hard_dependency_is_used():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    hard = _names(project["dependencies"])
    extras = set().union(*(_names(v) for k, v in project["optional-dependencies"].items() if k != "test"))
    imported = _imports()
    undeclared = {d: sorted(f) for d, f in imported.items() if d not in hard | extras}
    assert undeclared == {}, f"imported by fvt but not in pyproject.toml: {undeclared}"
    assert sorted(hard - set(imported)) == [], "hard dependencies that nothing in fvt imports"
    assert "onnxscript" not in hard
    assert {"onnx", "onnxruntime", "tensorboard"} <= set(imported) & extras  # the extras are what fvt imports


def test_extras_are_never_imported_at_module_level():
    # onnx/onnxruntime/tensorboard are extras: no module-level import of them anywhere in fvt, so
    # `import fvt` and the main job work without them (the import happens in the function that needs it)
    for path in (REPO / "fvt").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] in ("onnx", "onnxruntime", "tensorboard")
                       or n.startswith("torch.utils.tensorboard")]
                assert not bad, f"{path.relative_to(REPO)} imports the extra {bad} at module level"
