"""Evaluation figures (matplotlib, Agg backend: no display needed).

Each function writes one PNG and returns its path. With many classes the per-class
curves and the cell annotations would be unreadable, so they are capped."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MAX_CURVES = 20          # per-class curves drawn (the averages are always drawn)
MAX_ANNOTATED = 25       # confusion matrices with more classes get no numbers in the cells
MAX_TICK_LABELS = 60     # beyond this, class names are left off the axes


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix_figure(cm: np.ndarray, classes: Sequence[str], path: Path, normalized: bool) -> Path:
    n = len(classes)
    side = min(max(4.5, 0.45 * n + 2.5), 24)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalized else max(int(np.max(cm)), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n), labels=classes, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels=classes)
    if n <= MAX_ANNOTATED:
        top = np.max(cm) if np.max(cm) > 0 else 1
        for i in range(n):
            for j in range(n):
                v = cm[i, j]
                ax.text(j, i, f"{v:.2f}" if normalized else f"{int(v)}", ha="center", va="center",
                        fontsize=8, color="white" if v > 0.5 * top else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix" + (" (row-normalised: recall per class)" if normalized else " (counts)"))
    return _save(fig, path)


def _per_class_lines(ax, curves: dict, x: str, y: str, score: str, label: str) -> None:
    items = list(curves.items())
    for name, c in items[:MAX_CURVES]:
        ax.plot(c[x], c[y], lw=1, alpha=0.8, label=f"{name} ({label} {c[score]:.3f})")
    if len(items) > MAX_CURVES:
        ax.plot([], [], " ", label=f"... {len(items) - MAX_CURVES} more classes not drawn")


def roc_figure(curves: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 6))
    _per_class_lines(ax, curves["roc"], "fpr", "tpr", "auc", "AUC")
    mi, ma = curves["micro_roc"], curves["macro_roc"]
    ax.plot(mi["fpr"], mi["tpr"], "k--", lw=2, label=f"micro average (AUC {mi['auc']:.3f})")
    ax.plot(ma["fpr"], ma["tpr"], "k:", lw=2, label=f"macro average (AUC {ma['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, one-vs-rest",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def pr_figure(curves: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 6))
    _per_class_lines(ax, curves["pr"], "recall", "precision", "ap", "AP")
    mi = curves["micro_pr"]
    ax.plot(mi["recall"], mi["precision"], "k--", lw=2, label=f"micro average (AP {mi['ap']:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision-recall, one-vs-rest (macro AP {curves['macro_ap']:.3f})")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def reliability_figure(calib: dict, path: Path) -> Path:
    edges = np.asarray(calib["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    acc = np.nan_to_num(np.asarray(calib["accuracy"], dtype=float))
    counts = np.asarray(calib["counts"])
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers, acc, width=width * 0.95, color="tab:blue", edgecolor="black", label="accuracy in bin")
    conf = np.asarray(calib["confidence"], dtype=float)
    ok = ~np.isnan(conf)
    ax.bar(centers[ok], conf[ok] - acc[ok], bottom=acc[ok], width=width * 0.95, color="tab:red", alpha=0.35,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Reliability diagram (ECE {calib['ece']:.4f})")
    ax.legend(fontsize=8, loc="upper left")
    ax2.bar(centers, counts, width=width * 0.95, color="grey")
    ax2.set(xlabel="confidence (max softmax probability)", ylabel="samples")
    return _save(fig, path)


def mistakes_figure(items: List[dict], path: Path, load: Callable[[str], Image.Image],
                    cols: int = 4, thumb: int = 128) -> Optional[Path]:
    """Grid of thumbnails; each item: path, true, pred, prob. Returns None when there is nothing to show."""
    if not items:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on this data.", ha="center", va="center")
        return _save(fig, path)
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, it in zip(axes.ravel(), items):
        try:
            im = load(it["path"])
            im.thumbnail((thumb, thumb))
            ax.imshow(np.asarray(im))
        except Exception:  # the file changed since evaluation: keep the label, skip the picture
            ax.text(0.5, 0.5, "(unreadable)", ha="center", va="center")
        ax.set_title(f"true: {it['true']}\npred: {it['pred']} ({it['prob']:.2f})", fontsize=8, color="darkred")
    fig.suptitle("Most confident mistakes")
    return _save(fig, path)
