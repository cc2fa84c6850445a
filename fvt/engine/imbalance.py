"""Class imbalance: the start-up warning and the per-class loss weights of ``--class-weights``.

``--class-weights balanced`` gives class c the weight ``n_samples / (n_classes * n_c)`` over the
training split -- scikit-learn's ``compute_class_weight("balanced")``, which is what computes it
here. A class with 10x fewer photos then counts 10x more per photo, and the average weight
per training photo stays 1, so the loss keeps its scale. ``--class-weights FILE`` reads a CSV
of ``class,weight`` rows (a header row is optional; classes left out weigh 1.0).

The weights go into PyTorch's cross-entropy, which takes them with hard labels plus label
smoothing and with the soft targets of mixup/cutmix alike (``weighted_criterion``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError, choice_message

IMBALANCE_RATIO = 5.0  # largest class / smallest class above which fvt train warns


def imbalance_ratio(counts: Dict[str, int]) -> float:
    n = [v for v in counts.values()]
    if not n:
        return 1.0
    return float("inf") if min(n) == 0 else max(n) / min(n)


def imbalance_warning(counts: Dict[str, int], cfg) -> Optional[str]:
    """One line when the largest training class is more than IMBALANCE_RATIO x the smallest,
    naming the flags that answer it (those not in use yet)."""
    ratio = imbalance_ratio(counts)
    if ratio <= IMBALANCE_RATIO:
        return None
    big, small = max(counts, key=counts.get), min(counts, key=counts.get)
    flags = []
    if cfg.train.class_weights == "none":
        flags.append("--class-weights balanced")
    if cfg.data.sampler != "balanced":
        flags.append("--sampler balanced")
    if cfg.train.best_metric not in ("balanced_accuracy", "macro_f1"):
        flags.append("--best-metric balanced_accuracy (or macro_f1)")
    advice = f"; consider {', '.join(flags)}" if flags else ""
    return (f"warning: class imbalance {ratio:.1f}x in the training split ({big} {counts[big]} images, "
            f"{small} {counts[small]}): plain accuracy favours the large classes{advice}")


def read_weight_file(path: Path) -> Dict[str, float]:
    """``class,weight`` rows; every error names the line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"--class-weights {path}: cannot read it ({e})") from None
    out: Dict[str, float] = {}
    for n, row in enumerate(rows, start=1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if n == 1 and row[0].lower() in ("class", "label", "name"):
            continue
        if len(row) != 2:
            raise UsageError(f"--class-weights {path}:{n}: expected 'class,weight', got {','.join(row)!r}")
        try:
            w = float(row[1])
        except ValueError:
            w = float("nan")
        if not math.isfinite(w) or w <= 0:
            raise UsageError(f"--class-weights {path}:{n}: weight {row[1]!r} of {row[0]!r} must be a positive number")
        if row[0] in out:
            raise UsageError(f"--class-weights {path}:{n}: class {row[0]!r} is listed twice")
        out[row[0]] = w
    if not out:
        raise UsageError(f"--class-weights {path}: no 'class,weight' row in it")
    return out


def check_class_weights_option(spec: str) -> None:
    """Before any work: none, balanced, or a readable weight file."""
    if spec in ("none", "balanced"):
        return
    if not Path(spec).is_file():
        raise UsageError(f"--class-weights {spec!r}: use none, balanced or a CSV file of class,weight rows "
                         f"(no such file)")
    read_weight_file(Path(spec))


def class_weights(spec: str, classes: Sequence[str], counts: Dict[str, int]) -> Optional[np.ndarray]:
    """Float64 weight per class (in ``classes`` order) for ``spec``; None for ``none``."""
    if spec == "none":
        return None
    if spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        empty = [c for c in classes if counts.get(c, 0) == 0]
        if empty:
            raise UsageError(f"--class-weights balanced: class(es) {', '.join(empty)} have no training image")
        y = np.repeat(np.arange(len(classes)), [counts[c] for c in classes])
        return compute_class_weight("balanced", classes=np.arange(len(classes)), y=y)
    given = read_weight_file(Path(spec))
    unknown = [c for c in given if c not in classes]
    if unknown:
        raise UsageError(choice_message(f"--class-weights {spec}: class", unknown[0], classes))
    return np.array([given.get(c, 1.0) for c in classes], dtype=np.float64)


def describe(weights: np.ndarray, classes: List[str], spec: str) -> str:
    shown = ", ".join(f"{c} {w:.3g}" for c, w in list(zip(classes, weights))[:8])
    return f"class weights ({spec}): {shown}{', ...' if len(classes) > 8 else ''}"


def weighted_criterion(weights: torch.Tensor, smoothing: float, soft_targets: bool) -> torch.nn.Module:
    """Cross-entropy with per-class weights: with hard labels (and label smoothing), or with the soft
    targets mixup/cutmix make (smoothing is folded into those already)."""
    if soft_targets:
        return torch.nn.CrossEntropyLoss(weight=weights)
    return torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=smoothing)
