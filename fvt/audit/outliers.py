"""Outliers (images far from every other image) and class imbalance.

An image's outlier distance is its mean cosine distance to its ``K`` nearest neighbours in the
embedding space (any class): a photo unlike every class -- a screenshot, a document, a dog
among flowers -- has no close neighbour. It is flagged when the modified z-score (Iglewicz and
Hoaglin: 0.6745 (x - median) / MAD) of the *logarithm* of that distance exceeds ``--outlier-z`` (3.5
by default, their usual cut). The logarithm because these distances are heavily skewed (most images
have a near twin, a few are merely unusual): on a flowers run's embeddings the z-score of the raw
distance flagged 13% of the photos, that of its logarithm one photo.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

K = 5
OUTLIER_Z = 3.5
IMBALANCE_RATIO = 5.0  # as fvt train's start-up warning


def outlier_scores(nn_sim: np.ndarray, k: int = K) -> np.ndarray:
    """Modified z-score of the log of each image's mean distance to its k nearest neighbours (high = far)."""
    d = np.log(np.maximum(1.0 - nn_sim[:, :k].astype(np.float64).mean(axis=1), 1e-6))
    med = np.median(d)
    mad = np.median(np.abs(d - med))
    return 0.6745 * (d - med) / max(mad, 1e-9)


def imbalance(counts: Dict[str, Dict[str, int]]) -> dict:
    """Per split: images per class, largest / smallest ratio, and whether it passes the warning ratio."""
    out = {}
    for split, per in counts.items():
        n = [v for v in per.values()]
        ratio = (max(n) / min(n)) if n and min(n) > 0 else float("inf") if n else 1.0
        out[split] = {"counts": dict(per), "ratio": ratio, "largest": max(per, key=per.get) if per else None,
                      "smallest": min(per, key=per.get) if per else None, "imbalanced": ratio > IMBALANCE_RATIO}
    return out
