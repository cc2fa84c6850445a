"""Register fvt's models in timm's registry the moment both are imported, in either order.

``import fvt`` must stay free of torch and timm (the CLI answers ``--help`` without them), yet
``import fvt; import timm; timm.create_model("faster_vit_0_224")`` has to build fvt's model. So:
when timm is already imported, fvt's registry is imported at once (it registers its variants on
import); otherwise a one-shot import hook waits for ``import timm`` and imports the registry right
after timm's own code has run. Nothing else is imported early: an fvt user who never imports timm
(or whose code imports it only later) pays nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REGISTRY = "fvt.models.registry"


def _register() -> None:
    try:
        importlib.import_module(REGISTRY)  # registering is part of importing it
    except Exception as e:  # timm itself imported fine: do not break it, say why fvt's names are missing
        warnings.warn(f"fvt could not register its models with timm: {type(e).__name__}: {e}", RuntimeWarning,
                      stacklevel=2)


class _TimmFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first ``import timm`` it lets the other finders find timm and wraps the
    loader's ``exec_module`` so that fvt's registry is imported once timm's package code has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        remove()  # one shot; also keeps the find_spec below from coming back here
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_package_code = spec.loader.exec_module

        def exec_module(module):
            run_package_code(module)
            _register()

        spec.loader.exec_module = exec_module  # this spec's own loader instance, made for this import
        return spec


_FINDER = _TimmFinder()


def remove() -> None:
    """Take the hook out of ``sys.meta_path`` (it is there until timm is first imported)."""
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def register_when_timm_is_imported() -> None:
    if "timm" in sys.modules:
        _register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
