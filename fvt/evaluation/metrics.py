"""Classification metrics from logits and targets.

Everything that scikit-learn computes comes from scikit-learn; only the expected
calibration error (not in scikit-learn) is computed here. Accuracies are in percent,
AUC / AP / ECE are fractions in [0, 1].
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    auc,
    average_precision_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """ECE with equal-width confidence bins; also returns the per-bin table for the diagram."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bin b holds confidences in (edges[b], edges[b+1]]; the first bin also takes 0.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    nz = counts > 0
    acc = np.where(nz, acc_sum / np.maximum(counts, 1), np.nan)
    mean_conf = np.where(nz, conf_sum / np.maximum(counts, 1), np.nan)
    ece = float(np.sum(np.abs(acc_sum[nz] - conf_sum[nz])) / max(len(targets), 1))
    return {"ece": ece, "edges": edges.tolist(), "counts": counts.tolist(),
            "accuracy": acc.tolist(), "confidence": mean_conf.tolist()}


def roc_pr_curves(probs: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict:
    """One-vs-rest ROC and precision-recall curves per class, plus micro / macro averages.

    A class with no positive (or no negative) sample has no ROC curve; it is left out of
    the macro average and listed under ``undefined``."""
    n_classes = len(classes)
    onehot = np.eye(n_classes, dtype=np.int64)[targets]
    roc, pr, undefined = {}, {}, []
    for c, name in enumerate(classes):
        y = onehot[:, c]
        if y.min() == y.max():
            undefined.append(name)
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        prec, rec, _ = precision_recall_curve(y, probs[:, c])
        roc[name] = {"fpr": fpr, "tpr": tpr, "auc": float(roc_auc_score(y, probs[:, c]))}
        pr[name] = {"precision": prec, "recall": rec, "ap": float(average_precision_score(y, probs[:, c]))}
    fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
    prec, rec, _ = precision_recall_curve(onehot.ravel(), probs.ravel())
    micro_auc = float(auc(fpr, tpr))
    # Macro ROC curve: per-class TPRs interpolated on a common FPR grid, then averaged.
    grid = np.unique(np.concatenate([v["fpr"] for v in roc.values()])) if roc else np.array([0.0, 1.0])
    mean_tpr = np.mean([np.interp(grid, v["fpr"], v["tpr"]) for v in roc.values()], axis=0) if roc else grid
    return {
        "roc": roc, "pr": pr, "undefined": undefined,
        "micro_roc": {"fpr": fpr, "tpr": tpr, "auc": micro_auc},
        "macro_roc": {"fpr": grid, "tpr": mean_tpr,
                      "auc": float(np.mean([v["auc"] for v in roc.values()])) if roc else float("nan")},
        "micro_pr": {"precision": prec, "recall": rec,
                     "ap": float(average_precision_score(onehot.ravel(), probs.ravel()))},
        "macro_ap": float(np.mean([v["ap"] for v in pr.values()])) if pr else float("nan"),
    }


def _balanced_accuracy(targets: np.ndarray, preds: np.ndarray) -> float:
    with warnings.catch_warnings():
        # "y_pred contains classes not in y_true": expected when a class has no sample here.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(targets, preds))


def compute_metrics(logits: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict:
    """All scalar and tabular metrics of one evaluation (JSON-ready, plus curve arrays under ``curves``)."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    classes = list(classes)
    n_classes = len(classes)
    if logits.ndim != 2 or logits.shape[1] != n_classes:
        raise ValueError(f"logits of shape {logits.shape} do not match {n_classes} classes")
    probs = softmax(logits)
    preds = probs.argmax(axis=1)
    labels = list(range(n_classes))
    loss = float(F.cross_entropy(torch.as_tensor(logits), torch.as_tensor(targets)).item())
    cm = confusion_matrix(targets, preds, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        cm_norm = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    report_kw = dict(labels=labels, target_names=classes, digits=4, zero_division=0)
    curves = roc_pr_curves(probs, targets, classes)
    calib = expected_calibration_error(probs, targets)
    out: Dict[str, object] = {
        "num_samples": int(len(targets)),
        "num_classes": n_classes,
        "classes": classes,
        "top1": 100.0 * float(np.mean(preds == targets)),
    }
    if n_classes > 5:
        out["top5"] = 100.0 * float(top_k_accuracy_score(targets, probs, k=5, labels=labels))
    out.update({
        "loss": loss,
        "balanced_accuracy": 100.0 * _balanced_accuracy(targets, preds),
        "roc_auc_macro": curves["macro_roc"]["auc"],
        "roc_auc_micro": curves["micro_roc"]["auc"],
        "roc_auc_per_class": {k: v["auc"] for k, v in curves["roc"].items()},
        "average_precision_macro": curves["macro_ap"],
        "average_precision_micro": curves["micro_pr"]["ap"],
        "average_precision_per_class": {k: v["ap"] for k, v in curves["pr"].items()},
        "ece": calib["ece"],
        "ece_bins": ECE_BINS,
        "per_class": classification_report(targets, preds, output_dict=True, **report_kw),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": cm_norm.tolist(),
    })
    if curves["undefined"]:
        out["roc_undefined_classes"] = curves["undefined"]
    out["classification_report"] = classification_report(targets, preds, **report_kw)
    out["curves"] = curves
    out["calibration"] = calib
    return out


def json_metrics(metrics: dict) -> dict:
    """The part of ``compute_metrics`` that goes into metrics.json (no curve arrays, no text)."""
    return {k: v for k, v in metrics.items() if k not in ("curves", "classification_report", "calibration")}


def jsonable(x):
    """``x`` with numpy scalars as Python numbers, NaN as None and keys as strings: what json.dumps takes."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def most_confident_mistakes(probs: np.ndarray, targets: np.ndarray, k: int = 16) -> List[int]:
    """Row indices of the k wrong predictions made with the highest confidence."""
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != targets)
    order = np.argsort(-probs[wrong, preds[wrong]], kind="stable")
    return wrong[order[:k]].tolist()


def topk(probs: np.ndarray, k: int) -> tuple:
    """(indices, probabilities) of the k most likely classes per row, most likely first."""
    k = min(k, probs.shape[1])
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1)

