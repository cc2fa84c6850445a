"""Abstaining and spotting foreign images: confidence thresholds, coverage, OOD scores.

Selective prediction: the model answers a photo only when its top probability reaches a
threshold; below it the answer is ``unknown``. ``coverage`` is the fraction of photos
answered, ``precision`` the accuracy on those. ``choose_threshold`` picks, on validation
data, the lowest threshold (so the highest coverage) whose answered photos reach the target
precision; fvt stores it in ``best.pt`` under ``reject`` with a thinned copy of the curve, so
``fvt predict --reject auto --target-precision P`` can pick another target without the data.

Out-of-distribution (OOD) detection scores an image by how "in-distribution" it looks:
maximum softmax probability (MSP, Hendrycks & Gimpel 2017) and the negative free energy
``T * logsumexp(logits / T)`` (Liu et al. 2020); ``ood_metrics`` gives AUROC (in-distribution
as the positive class) and the false-positive rate on foreign images at 95% true-positive rate.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..errors import UsageError

UNKNOWN = "unknown"
CURVE_POINTS = 200  # points of the coverage curve kept in best.pt / export metadata


def selective_curve(probs: np.ndarray, targets: np.ndarray) -> dict:
    """For each distinct confidence c (highest first): answering every photo with top
    probability >= c gives ``coverage`` and ``precision``. Arrays ordered by falling threshold."""
    conf = np.asarray(probs, dtype=np.float64).max(axis=1)
    correct = (np.asarray(probs).argmax(axis=1) == np.asarray(targets)).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    n = len(conf)
    hits = np.cumsum(correct)
    last = np.r_[conf[1:] != conf[:-1], True] if n else np.zeros(0, bool)  # end of each tie group
    k = np.flatnonzero(last) + 1                                           # photos answered
    return {"threshold": conf[k - 1], "coverage": k / max(n, 1), "precision": hits[k - 1] / k}


def threshold_from_curve(curve: dict, target_precision: float) -> dict:
    """The lowest threshold whose precision reaches ``target_precision`` (most coverage); when
    none does, a threshold of 1.0 (answer nothing) with ``reached`` False."""
    thr = np.asarray(curve["threshold"], dtype=np.float64)
    prec = np.asarray(curve["precision"], dtype=np.float64)
    cov = np.asarray(curve["coverage"], dtype=np.float64)
    ok = np.flatnonzero(prec >= target_precision - 1e-12)
    if len(ok) == 0:
        return {"threshold": 1.0, "target_precision": float(target_precision), "coverage": 0.0,
                "precision": None, "reached": False}
    i = ok[np.argmax(cov[ok])]
    return {"threshold": float(thr[i]), "target_precision": float(target_precision), "coverage": float(cov[i]),
            "precision": float(prec[i]), "reached": True}


def choose_threshold(probs: np.ndarray, targets: np.ndarray, target_precision: float = 0.95) -> dict:
    """The ``reject`` entry of a checkpoint: threshold, target_precision, coverage, precision,
    reached, and ``curve`` (the coverage curve thinned to CURVE_POINTS, plain lists)."""
    curve = selective_curve(probs, targets)
    chosen = threshold_from_curve(curve, target_precision)
    return {**chosen, "curve": thin_curve(curve)}


def thin_curve(curve: dict, points: int = CURVE_POINTS) -> dict:
    n = len(curve["threshold"])
    keep = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int)) if n else np.zeros(0, int)
    return {k: [float(v) for v in np.asarray(curve[k])[keep]] for k in ("threshold", "coverage", "precision")}


def answered(probs: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """Which rows are answered (top probability >= threshold); all of them without a threshold."""
    conf = np.asarray(probs).max(axis=1)
    return np.ones(len(conf), bool) if threshold is None else conf >= threshold


def selective_summary(probs: np.ndarray, targets: np.ndarray, threshold: Optional[float],
                      target_precision: float = 0.95) -> dict:
    """On this data: coverage/precision at the model's own threshold, and the coverage the
    best threshold for ``target_precision`` would give here."""
    best = threshold_from_curve(selective_curve(probs, targets), target_precision)
    out = {"target_precision": target_precision, "coverage_at_target": best["coverage"],
           "threshold_at_target": best["threshold"]}
    if threshold is not None:
        mask = answered(probs, threshold)
        right = np.asarray(probs).argmax(axis=1) == np.asarray(targets)
        out.update(threshold=float(threshold), coverage=float(mask.mean()) if len(mask) else 0.0,
                   precision=float(right[mask].mean()) if mask.any() else float("nan"))
    return out


def resolve_reject(loaded, reject: Union[None, str, float], target_precision: Optional[float] = None
                   ) -> Optional[float]:
    """The probability threshold ``--reject`` asks for: None (always answer), a number in [0, 1],
    or ``auto``: the threshold stored with the model (``loaded.reject``), re-chosen from its stored
    curve when ``target_precision`` differs from the one it was chosen for."""
    if reject is None or reject == "none":
        return None
    if UNKNOWN in loaded.classes:
        raise UsageError(f"--reject labels unsure answers '{UNKNOWN}', but the model has a class named "
                         f"'{UNKNOWN}'; the two could not be told apart")
    if isinstance(reject, str) and reject != "auto":
        try:
            reject = float(reject)
        except ValueError:
            raise UsageError(f"--reject {reject!r}: use auto or a probability such as 0.6") from None
    if not isinstance(reject, str):
        if not 0.0 <= float(reject) <= 1.0:
            raise UsageError(f"--reject {reject}: a probability threshold is between 0 and 1")
        return float(reject)
    stored = loaded.reject or {}
    if not isinstance(stored.get("threshold"), (int, float)):
        raise UsageError("--reject auto: this model carries no threshold (it comes from fvt train with a validation "
                         "split, stored in best.pt and its exports); give one, e.g. --reject 0.6")
    if target_precision is None or abs(target_precision - stored.get("target_precision", -1)) < 1e-12:
        return float(stored["threshold"])
    if not 0.0 < target_precision <= 1.0:
        raise UsageError(f"--target-precision {target_precision}: a precision is in (0, 1]")
    curve = stored.get("curve")
    if not isinstance(curve, dict) or not curve.get("threshold"):
        raise UsageError(f"--target-precision {target_precision}: the model stores a threshold for precision "
                         f"{stored.get('target_precision')} only; pass --reject P instead")
    return threshold_from_curve(curve, target_precision)["threshold"]


# -- out-of-distribution ---------------------------------------------------------------------------
def msp_scores(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Maximum softmax probability of ``softmax(logits / T)``: high = in-distribution."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64)) / temperature
    return torch.softmax(x, dim=1).max(dim=1).values.numpy()


def energy_scores(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy ``T * logsumexp(logits / T)``: high = in-distribution."""
    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    return (temperature * torch.logsumexp(x / temperature, dim=1)).numpy()


def ood_metrics(in_scores: Sequence[float], out_scores: Sequence[float]) -> dict:
    """AUROC (in-distribution = positive) and FPR of foreign images at 95% TPR (scikit-learn's curve)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    s = np.r_[np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auroc": float(roc_auc_score(y, s)), "fpr_at_95_tpr": float(fpr[np.searchsorted(tpr, 0.95, side="left")])}
