"""Likely label errors: out-of-fold class probabilities from the embeddings, ranked by cleanlab.

A logistic regression on the (L2-normalised, standardised) embeddings is trained on k-1 folds
and predicts the held-out fold (scikit-learn's ``cross_val_predict`` with stratified folds), so
no image's probability comes from a classifier that saw its label. ``cleanlab.filter
.find_label_issues`` then flags the images whose given label disagrees with those
probabilities (confident learning), and ``cleanlab.rank.get_label_quality_scores`` ranks
every image (self-confidence: the probability of its given label; low = suspicious).
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np

EXTRA = "audit"


def require_cleanlab():
    from ..extras import require

    return require("cleanlab", EXTRA, "fvt data audit (label issues)")


def normalized(x: np.ndarray) -> np.ndarray:
    """Centred on the mean embedding, then L2-normalised: cosine similarity becomes a dot product."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def out_of_fold_probs(x: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5,
                      seed: int = 0) -> np.ndarray:
    """(N, num_classes) probabilities, each row from a classifier that did not train on that row."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(labels, minlength=num_classes)
    k = int(max(2, min(folds, counts[counts > 0].min())))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class smaller than k: sklearn warns and copes
        warnings.simplefilter("ignore")
        probs = cross_val_predict(clf, x, labels, cv=cv, method="predict_proba")
    if probs.shape[1] != num_classes:  # a class absent from the data: give it a zero column
        full = np.zeros((len(x), num_classes))
        full[:, np.flatnonzero(counts)] = probs
        probs = full
    return probs


def label_issues(labels: np.ndarray, probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(indices flagged by cleanlab, most likely wrong first; label quality of every image)."""
    require_cleanlab()
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    present = np.unique(labels)
    if len(present) < 2:
        return np.zeros(0, dtype=np.int64), np.ones(len(labels))
    probs = np.clip(probs, 1e-12, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
        quality = get_label_quality_scores(labels, probs, method="self_confidence")
    return np.asarray(flagged, dtype=np.int64), np.asarray(quality, dtype=np.float64)
