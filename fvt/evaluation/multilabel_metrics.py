"""Multi-label metrics from logits (one sigmoid per label) and 0/1 targets, computed by scikit-learn.

Every score is a fraction in [0, 1]: mean average precision (macro over the labels that have a
positive image, and micro over all decisions), per-label AP / precision / recall / F1 at the
model's thresholds, subset accuracy (the predicted set equals the true set) and Hamming loss
(share of wrong label decisions). ``tune_thresholds`` picks, per label, the probability threshold
with the best F1 on a validation set; those thresholds travel with the model.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (accuracy_score, average_precision_score, hamming_loss, precision_recall_curve,
                             precision_recall_fscore_support, roc_auc_score)

DEFAULT_THRESHOLD = 0.5


def sigmoid(logits) -> np.ndarray:
    return torch.sigmoid(torch.as_tensor(np.asarray(logits), dtype=torch.float64)).numpy()


def _defined(y: np.ndarray) -> np.ndarray:
    """Labels with at least one positive (AP is undefined without one)."""
    return np.flatnonzero(y.sum(axis=0) > 0)


def mean_average_precision(probs: np.ndarray, y: np.ndarray) -> Dict[str, object]:
    """{"per_class": [AP or None], "macro": mean over defined labels, "micro": AP of all decisions}."""
    y = np.asarray(y).astype(np.int64)
    per: List[Optional[float]] = [None] * y.shape[1]
    for c in _defined(y):
        per[c] = float(average_precision_score(y[:, c], probs[:, c]))
    done = [v for v in per if v is not None]
    micro = float(average_precision_score(y.ravel(), probs.ravel())) if y.any() else float("nan")
    return {"per_class": per, "macro": float(np.mean(done)) if done else float("nan"), "micro": micro}


def tune_thresholds(probs: np.ndarray, y: np.ndarray, default: float = DEFAULT_THRESHOLD) -> List[float]:
    """Per label, the probability threshold (predict the label when p >= it) with the highest F1 on
    (probs, y); ``default`` for a label without a positive image.

    The threshold sits midway between the lowest score it accepts and the highest one it rejects:
    the same decisions on (probs, y), but not on the edge of one validation image's score, which on a
    small validation set would reject every slightly less confident positive elsewhere."""
    y = np.asarray(y).astype(np.int64)
    out = []
    for c in range(y.shape[1]):
        if not y[:, c].any():
            out.append(float(default))
            continue
        prec, rec, thr = precision_recall_curve(y[:, c], probs[:, c])
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.nan_to_num(2 * prec[:-1] * rec[:-1] / (prec[:-1] + rec[:-1]))
        accept = float(thr[int(np.argmax(f1))])
        below = probs[:, c][probs[:, c] < accept]
        out.append((accept + (float(below.max()) if below.size else 0.0)) / 2)
    return out


def predict_sets(probs: np.ndarray, thresholds: Optional[Sequence[float]]) -> np.ndarray:
    """0/1 decisions: label c when its probability reaches thresholds[c] (0.5 when none are given)."""
    thr = np.asarray(thresholds if thresholds is not None else [DEFAULT_THRESHOLD] * probs.shape[1], dtype=np.float64)
    return (probs >= thr[None, :]).astype(np.int64)


def bce_loss(logits, y) -> float:
    return float(F.binary_cross_entropy_with_logits(torch.as_tensor(np.asarray(logits), dtype=torch.float64),
                                                    torch.as_tensor(np.asarray(y), dtype=torch.float64)).item())


def epoch_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """What training logs per evaluation: loss (BCE), map / map_micro (AP fractions), f1 (macro, at 0.5)."""
    n = int(targets.shape[0])
    if n == 0:
        return {"map": 0.0, "loss": float("nan"), "count": 0}
    probs, y = sigmoid(logits.float()), targets.numpy().round().astype(np.int64)
    ap = mean_average_precision(probs, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, f1, _ = precision_recall_fscore_support(y, predict_sets(probs, None), average="macro", zero_division=0)
    return {"loss": bce_loss(logits, y), "map": ap["macro"], "map_micro": ap["micro"], "f1": float(f1), "count": n}


def confusion_of_sets(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Label x label counts: images whose true set holds the row label and whose predicted set holds the
    column label (diagonal: true positives; off-diagonal: labels predicted alongside, or instead of, it)."""
    return (y.T.astype(np.int64) @ pred.astype(np.int64))


def compute_multilabel_metrics(logits: np.ndarray, targets: np.ndarray, classes: Sequence[str],
                               thresholds: Optional[Sequence[float]] = None) -> dict:
    """Everything ``fvt eval`` writes for a multi-label model (JSON-ready, curves under ``curves``)."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets).round().astype(np.int64)
    classes = list(classes)
    if logits.ndim != 2 or logits.shape[1] != len(classes) or y.shape != logits.shape:
        raise ValueError(f"logits {logits.shape} and targets {y.shape} do not match {len(classes)} labels")
    probs = sigmoid(logits)
    thr = list(thresholds) if thresholds is not None else [DEFAULT_THRESHOLD] * len(classes)
    pred = predict_sets(probs, thr)
    ap = mean_average_precision(probs, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # labels absent from this set: their precision / recall are 0 by definition
        p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
        macro = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        micro = precision_recall_fscore_support(y, pred, average="micro", zero_division=0)
    defined = _defined(y)
    both = [c for c in defined if (y[:, c] == 0).any()]
    curves = {"pr": {}, "micro_pr": {}}
    for c in defined:
        prec, rec, _ = precision_recall_curve(y[:, c], probs[:, c])
        curves["pr"][classes[c]] = {"precision": prec, "recall": rec, "ap": ap["per_class"][c]}
    if y.any():
        prec, rec, _ = precision_recall_curve(y.ravel(), probs.ravel())
        curves["micro_pr"] = {"precision": prec, "recall": rec, "ap": ap["micro"]}
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1-score": float(f[i]), "support": int(s[i]),
                     "ap": ap["per_class"][i], "threshold": float(thr[i])} for i, c in enumerate(classes)}
    return {
        "task": "multilabel", "num_samples": int(len(y)), "num_classes": len(classes), "classes": classes,
        "map_macro": ap["macro"], "map_micro": ap["micro"],
        "average_precision_per_class": {classes[c]: ap["per_class"][c] for c in defined},
        "roc_auc_macro": float(roc_auc_score(y[:, both], probs[:, both], average="macro")) if both else float("nan"),
        "f1_macro": float(macro[2]), "f1_micro": float(micro[2]), "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]), "subset_accuracy": float(accuracy_score(y, pred)),
        "hamming_loss": float(hamming_loss(y, pred)), "loss": bce_loss(logits, y), "thresholds": [float(t) for t in thr],
        "labels_per_image_true": float(y.sum(axis=1).mean()) if len(y) else 0.0,
        "labels_per_image_predicted": float(pred.sum(axis=1).mean()) if len(y) else 0.0,
        "per_class": per_class, "label_confusion": confusion_of_sets(y, pred).tolist(),
        "undefined_classes": [classes[c] for c in range(len(classes)) if c not in set(defined.tolist())],
        "curves": curves,
    }
