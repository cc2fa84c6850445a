"""Register fvt's models in timm's registry the moment both are imported, in either order.

``import fvt`` must stay free of torch and timm (the CLI answers ``--help`` without them), yet
``import fvt; import timm; timm.create_model("faster_vit_0_224")`` has to build fvt's model. So:
when timm is already imported, fvt's variants are registered at once
(``fvt.models.timm_models.register_all``); otherwise an import hook waits for timm and registers them once timm's code has run.

The registry imports ``fvt.models.faster_vit``, which imports timm itself. If timm's import finishes
while one of fvt's model modules is still being imported (``from fvt.models.faster_vit import
FasterViT`` before timm), importing the registry then would find that module half-built; so the hook
also watches fvt's model modules and registers when the last of them has finished. An fvt user who
never imports timm pays nothing but a look at each ``fvt.models`` import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings

REGISTRY = "fvt.models.timm_models"  # register_all() puts fvt's variants in timm's registry
_loading: set = set()  # watched modules whose code is running right now


def _register() -> None:
    try:
        importlib.import_module(REGISTRY).register_all()
    except Exception as e:  # timm itself imported fine: do not break it, say why fvt's names are missing
        warnings.warn(f"fvt could not register its models with timm: {type(e).__name__}: {e}", RuntimeWarning,
                      stacklevel=2)


def _register_if_ready() -> None:
    """Import the registry once timm is imported and none of fvt's model modules is half-built."""
    if _loading or "timm" not in sys.modules:
        return  # the watched import still running calls this again when it is done
    remove()
    _register()


class _Watcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``timm`` and ``fvt.models.*`` it lets the other finders find the module
    and wraps the loader's ``exec_module`` so that the registry is imported when the code has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm" and not fullname.startswith("fvt.models."):
            return None
        spec = None
        for finder in [f for f in sys.meta_path if f is not self]:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module_code = spec.loader.exec_module

        def exec_module(module):
            _loading.add(fullname)
            try:
                run_module_code(module)
            finally:
                _loading.discard(fullname)
            _register_if_ready()

        spec.loader.exec_module = exec_module  # this spec's own loader instance, made for this import
        return spec


_WATCHER = _Watcher()


def remove() -> None:
    """Take the hook out of ``sys.meta_path`` (it is there until fvt's models are registered)."""
    while _WATCHER in sys.meta_path:
        sys.meta_path.remove(_WATCHER)


def register_when_timm_is_imported() -> None:
    if "timm" in sys.modules:
        _register()
    elif _WATCHER not in sys.meta_path:
        sys.meta_path.insert(0, _WATCHER)
