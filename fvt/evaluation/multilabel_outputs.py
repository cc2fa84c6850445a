"""Every file ``fvt eval`` writes for a multi-label model, from logits and 0/1 targets.

``metrics.json`` (all scores fractions: mAP macro/micro, per-label AP / precision / recall / F1 /
threshold, subset accuracy, Hamming loss, the label confusion), ``classification_report.txt``
(scikit-learn's, per label), ``predictions.csv`` (path, true and predicted label sets joined by
``;``, one probability column per label) and the figures: precision-recall curves, AP per label,
true vs predicted labels, label co-occurrence and the most confident mistakes (wrong label sets).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from . import figures
from .metrics import jsonable
from .multilabel_metrics import compute_multilabel_metrics, predict_sets, sigmoid

MAX_MISTAKES = 16
ML_FIGURES = {  # file -> title in report.html, in this order
    "pr_curves.png": "Precision-recall per label",
    "ap_per_class.png": "Average precision per label",
    "label_confusion.png": "True labels (rows) against predicted labels (columns)",
    "cooccurrence.png": "Label co-occurrence in this data",
    "mistakes.png": "Most confident mistakes (wrong label sets)",
}


def joined(names: Sequence[str], row) -> str:
    return ";".join(c for c, on in zip(names, row) if on)


def write_predictions_csv(path: Path, paths: Sequence[str], y: np.ndarray, probs: np.ndarray, pred: np.ndarray,
                          classes: Sequence[str]) -> None:
    """Columns: path, true, pred (label sets joined by ';'), then one probability column per label."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "true", "pred", *classes])
        for p, t, q, row in zip(paths, y, pred, probs):
            w.writerow([p, joined(classes, t), joined(classes, q), *(f"{v:.6f}" for v in row)])


def confident_mistakes(probs: np.ndarray, y: np.ndarray, pred: np.ndarray, k: int = MAX_MISTAKES) -> List[int]:
    """Rows whose predicted set is wrong, the most confident wrong decision first (a false positive's
    probability, or one minus a missed label's)."""
    wrong = pred != y
    conf = np.where(wrong, np.where(pred == 1, probs, 1 - probs), 0).max(axis=1)
    rows = np.flatnonzero(wrong.any(axis=1))
    return rows[np.argsort(-conf[rows], kind="stable")][:k].tolist()


def ap_figure(ap: dict, path: Path) -> Path:
    plt = figures.plt
    names = sorted(ap, key=lambda c: ap[c])
    fig, ax = plt.subplots(figsize=(7, min(max(2.5, 0.3 * len(names) + 1), 24)))
    ax.barh(range(len(names)), [ap[c] for c in names], color="tab:blue")
    ax.set_yticks(range(len(names)), labels=[figures.label(c) for c in names] if len(names) <= 60 else [""] * len(names))
    ax.set(xlim=(0, 1), xlabel="average precision", title=f"AP per label (mean {np.mean(list(ap.values())):.3f})")
    ax.grid(alpha=0.3, axis="x")
    return figures._save(fig, path)


def write_multilabel_outputs(out: Path, logits: np.ndarray, targets: np.ndarray, paths: Sequence[str],
                             classes: Sequence[str], thresholds: Optional[Sequence[float]],
                             extra: Optional[dict] = None) -> dict:
    """Every eval file (see the module doc); returns the metrics dict as written to metrics.json."""
    from sklearn.metrics import classification_report

    from ..data import load_image
    from ..data.multilabel_inspect import cooccurrence_figure

    out.mkdir(parents=True, exist_ok=True)
    m = compute_multilabel_metrics(logits, targets, classes, thresholds)
    y, probs = np.asarray(targets).round().astype(np.int64), sigmoid(logits)
    pred = predict_sets(probs, m["thresholds"])
    record = {**(extra or {}), **{k: v for k, v in m.items() if k != "curves"}, "score_unit": "fraction"}
    (out / "metrics.json").write_text(json.dumps(jsonable(record), indent=2))
    text = classification_report(y, pred, target_names=list(classes), digits=4, zero_division=0)
    thr = ", ".join(f"{c} {t:.3f}" for c, t in zip(classes, m["thresholds"]))
    (out / "classification_report.txt").write_text(f"{text}\nthresholds: {thr}\n")
    write_predictions_csv(out / "predictions.csv", paths, y, probs, pred, classes)
    curves = m["curves"]
    if curves["micro_pr"]:
        figures.pr_figure({"pr": curves["pr"], "micro_pr": curves["micro_pr"], "macro_ap": m["map_macro"]},
                          out / "pr_curves.png")
    if m["average_precision_per_class"]:
        ap_figure(m["average_precision_per_class"], out / "ap_per_class.png")
    cooccurrence_figure(m["label_confusion"], classes, out / "label_confusion.png",
                        "True label (rows) vs predicted label (columns): share of the row label's images",
                        row_totals=y.sum(axis=0))
    cooccurrence_figure((y.T @ y).tolist(), classes, out / "cooccurrence.png")
    items = [{"path": paths[i], "true": joined(classes, y[i]) or "(none)", "pred": joined(classes, pred[i]) or "(none)",
              "prob": float(np.where(pred[i] != y[i], np.where(pred[i] == 1, probs[i], 1 - probs[i]), 0).max())}
             for i in confident_mistakes(probs, y, pred)]
    figures.mistakes_figure(items, out / "mistakes.png", load_image)
    return record
