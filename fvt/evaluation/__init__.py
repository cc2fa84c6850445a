"""fvt.evaluation: metrics, figures, report.html, prediction, export and the demo.

Public entry points: ``evaluate_checkpoint`` (fvt eval), ``write_report`` (report.html),
``Classifier`` (fvt predict / ``fvt.Classifier``), ``export`` (fvt export)."""

from .predict import Classifier, Prediction  # noqa: F401
from .report import write_report  # noqa: F401


def evaluate_checkpoint(*args, **kwargs):
    """See :func:`fvt.evaluation.evaluate.evaluate_checkpoint` (imported lazily: it pulls in the engine)."""
    from .evaluate import evaluate_checkpoint as run

    return run(*args, **kwargs)
