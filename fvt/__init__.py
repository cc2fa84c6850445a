"""fvt - the FasterViT toolkit.

``import fvt`` is light (no torch): everything is imported on first use (PEP 562), so ``fvt --help``
answers at once. fvt's FasterViT variants are registered in timm's model registry as soon as both
are imported, in either order: ``import fvt; import timm; timm.create_model("faster_vit_0_224")``
builds fvt's implementation (see :mod:`fvt._timm_hook`); ``fvt_faster_vit_0_224`` always does, and
with the official ``fastervit`` package imported the plain names are its models (docs/timm.md).

From Python (notebooks, scripts): ``fvt.create_model``, ``fvt.list_models``, ``fvt.load_pretrained``;
``fvt.train``, ``fvt.evaluate``, ``fvt.predict`` and ``fvt.export`` do what the commands do and return
dataclasses (see :mod:`fvt.api`); ``fvt.Classifier`` and the errors.
"""

import typing as _typing

from ._lazy import lazy_attributes as _lazy_attributes
from ._timm_hook import register_when_timm_is_imported as _register_when_timm_is_imported
from ._version import __version__

# name -> module that defines it; imported on first attribute access
_LAZY = {
    "create_model": "fvt.models.registry", "list_models": "fvt.models.registry",
    "load_pretrained": "fvt.models.checkpoint",
    "train": "fvt.api", "evaluate": "fvt.api", "predict": "fvt.api", "export": "fvt.api", "embed": "fvt.api",
    "TrainResult": "fvt.api", "EvalResult": "fvt.api", "PredictResult": "fvt.api", "ExportResult": "fvt.api",
    "EmbedResult": "fvt.api",
    "Config": "fvt.config",
    "Classifier": "fvt.evaluation.predict", "Prediction": "fvt.evaluation.predict",
    "FvtError": "fvt.errors", "UsageError": "fvt.errors", "DataError": "fvt.errors", "CheckpointError": "fvt.errors",
}

__all__ = ["__version__", *_LAZY]

if _typing.TYPE_CHECKING:  # for type checkers and IDEs: the names the lazy loader provides
    from .api import (EmbedResult, EvalResult, ExportResult, PredictResult, TrainResult, embed,  # noqa: F401
                      evaluate, export, predict, train)
    from .config import Config  # noqa: F401
    from .errors import CheckpointError, DataError, FvtError, UsageError  # noqa: F401
    from .evaluation.predict import Classifier, Prediction  # noqa: F401
    from .models import create_model, list_models, load_pretrained  # noqa: F401

__getattr__, __dir__ = _lazy_attributes(globals(), _LAZY)
_register_when_timm_is_imported()
