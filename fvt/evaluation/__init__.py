"""fvt.evaluation: metrics, figures, report.html, prediction, export and the demo.

Public entry points: ``evaluate_checkpoint`` (fvt eval), ``write_report`` (report.html),
``Classifier`` (fvt predict / ``fvt.Classifier``), ``export`` (fvt export). Imported on first
use, so the commands' flags (``fvt.evaluation.commands``) load without torch."""

import typing as _typing

from .._lazy import lazy_attributes as _lazy_attributes

_LAZY = {"Classifier": ".predict", "Prediction": ".predict", "write_report": ".report",
         "evaluate_checkpoint": ".evaluate"}
__all__ = list(_LAZY)

if _typing.TYPE_CHECKING:
    from .evaluate import evaluate_checkpoint  # noqa: F401
    from .predict import Classifier, Prediction  # noqa: F401
    from .report import write_report  # noqa: F401

__getattr__, __dir__ = _lazy_attributes(globals(), _LAZY)
