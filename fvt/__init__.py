"""fvt - the FasterViT toolkit.

Importing fvt registers its FasterViT variants in timm's model registry, so
``timm.create_model("faster_vit_0_224")`` builds fvt's implementation afterwards
(``fvt_faster_vit_0_224`` always does; with the official ``fastervit`` package imported the
plain names are its models: docs/timm.md).

From Python (notebooks, scripts): ``fvt.train``, ``fvt.evaluate``, ``fvt.predict`` and
``fvt.export`` do what the commands do and return dataclasses (see :mod:`fvt.api`).
They, ``fvt.Classifier`` and the errors are imported on first use, so ``import fvt`` stays
as light as the model registry.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

from .models import create_model, list_models, load_pretrained  # noqa: E402,F401

# name -> module that defines it; imported on first attribute access (PEP 562)
_LAZY = {
    "train": "fvt.api", "evaluate": "fvt.api", "predict": "fvt.api", "export": "fvt.api",
    "TrainResult": "fvt.api", "EvalResult": "fvt.api", "PredictResult": "fvt.api", "ExportResult": "fvt.api",
    "Config": "fvt.config",
    "Classifier": "fvt.evaluation.predict", "Prediction": "fvt.evaluation.predict",
    "FvtError": "fvt.errors", "UsageError": "fvt.errors", "DataError": "fvt.errors", "CheckpointError": "fvt.errors",
}

__all__ = ["__version__", "create_model", "list_models", "load_pretrained", *_LAZY]

if _typing.TYPE_CHECKING:  # for type checkers and IDEs: the names the lazy loader provides
    from .api import (EvalResult, ExportResult, PredictResult, TrainResult, evaluate, export, predict,  # noqa: F401
                      train)
    from .config import Config  # noqa: F401
    from .errors import CheckpointError, DataError, FvtError, UsageError  # noqa: F401
    from .evaluation.predict import Classifier, Prediction  # noqa: F401


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fvt' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> _typing.List[str]:
    return sorted({n for n in globals() if not n.startswith("_")} | set(__all__))
