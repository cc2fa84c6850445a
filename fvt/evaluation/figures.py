"""Evaluation and run figures (matplotlib, Agg backend: no display needed).

Each function writes one PNG and returns its path. With many classes the per-class
curves and the cell annotations would be unreadable, so they are capped. Class names are
user data: every one goes through ``label`` so that a ``$`` in a name is shown, never parsed
as mathtext (a name like ``$\\undefinedcmd{$`` used to crash the figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MAX_CURVES = 20          # per-class curves drawn (the averages are always drawn)
MAX_ANNOTATED = 25       # confusion matrices with more classes get no numbers in the cells
MAX_TICK_LABELS = 60     # beyond this, class names are left off the axes

FIGURES = {  # eval file name -> title in report.html (the report shows them in this order)
    "confusion_matrix.png": "Confusion matrix (counts)",
    "confusion_matrix_normalized.png": "Confusion matrix (row-normalised)",
    "roc_curves.png": "ROC curves (one-vs-rest), linear and log false-positive rate",
    "pr_curves.png": "Precision-recall curves",
    "reliability.png": "Calibration: reliability diagram",
    "mistakes.png": "Most confident mistakes",
}
RUN_FIGURES = {  # run-folder figures made for the report
    "class_distribution.png": "Images per class and split",
    "train_samples.png": "Augmented training samples (what the model saw)",
}


def label(text) -> str:
    """A user string as literal matplotlib text: escape ``$`` so mathtext never parses it."""
    return str(text).replace("$", r"\$")


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
        ax.set_xticks(range(n), labels=[label(c) for c in classes], rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels=[label(c) for c in classes])
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


def _per_class_lines(ax, curves: dict, x: str, y: str, score: str, score_name: str) -> None:
    items = list(curves.items())
    for name, c in items[:MAX_CURVES]:
        ax.plot(c[x], c[y], lw=1, alpha=0.8, label=f"{label(name)} ({score_name} {c[score]:.3f})")
    if len(items) > MAX_CURVES:
        ax.plot([], [], " ", label=f"... {len(items) - MAX_CURVES} more classes not drawn")


def roc_figure(curves: dict, path: Path) -> Path:
    """Two panels: the classic linear axes, and a log false-positive-rate axis where a good
    classifier's curves (all near the top-left corner on linear axes) can be told apart."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    mi, ma = curves["micro_roc"], curves["macro_roc"]
    positive = [v for c in [*curves["roc"].values(), mi] for v in np.asarray(c["fpr"]) if v > 0]
    floor = min(positive) / 2 if positive else 1e-3  # FPR 0 has no place on a log axis
    for ax, log in zip(axes, (False, True)):
        _per_class_lines(ax, curves["roc"], "fpr", "tpr", "auc", "AUC")
        ax.plot(mi["fpr"], mi["tpr"], "k--", lw=2, label=f"micro average (AUC {mi['auc']:.3f})")
        ax.plot(ma["fpr"], ma["tpr"], "k:", lw=2, label=f"macro average (AUC {ma['auc']:.3f})")
        grid = np.logspace(np.log10(floor), 0, 50) if log else np.array([0.0, 1.0])
        ax.plot(grid, grid, color="grey", lw=0.8, label="chance")
        ax.set(xlabel="false positive rate" + (" (log scale)" if log else ""), ylabel="true positive rate",
               ylim=(0, 1.02), title="ROC, one-vs-rest" + (": low false-positive region" if log else ""))
        if log:
            ax.set_xscale("log")
            ax.set_xlim(floor, 1)
        else:
            ax.set_xlim(0, 1)
        ax.grid(alpha=0.3, which="both" if log else "major")
    axes[0].legend(fontsize=7, loc="lower right")
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


def reliability_axes(calib: dict):
    """The reliability diagram as a figure (returned for inspection; ``reliability_figure`` saves it).

    Blue bars: accuracy per confidence bin. The gap between accuracy and mean confidence is drawn
    from the lower to the higher of the two, red where the model is over-confident (confidence
    above accuracy) and green where it is under-confident, so neither case hides the other."""
    edges = np.asarray(calib["edges"], dtype=float)
    centers = (edges[:-1] + edges[1:]) / 2
    width = (edges[1] - edges[0]) * 0.9
    acc = np.asarray(calib["accuracy"], dtype=float)
    conf = np.asarray(calib["confidence"], dtype=float)
    counts = np.asarray(calib["counts"])
    ok = ~np.isnan(acc) & ~np.isnan(conf)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(6, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centers[ok], acc[ok], width=width, color="tab:blue", edgecolor="black", label="accuracy in bin")
    for mask, color, name in ((ok & (conf > acc), "tab:red", "gap: over-confident"),
                              (ok & (conf < acc), "tab:green", "gap: under-confident")):
        if mask.any():
            low, high = np.minimum(acc, conf)[mask], np.maximum(acc, conf)[mask]
            ax.bar(centers[mask], high - low, bottom=low, width=width, color=color, alpha=0.45, hatch="//",
                   edgecolor=color, label=name)
    ax.plot(centers[ok], conf[ok], "k_", ms=14, mew=2, label="mean confidence in bin")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Reliability diagram (ECE {calib['ece']:.4f})")
    ax.legend(fontsize=8, loc="upper left")
    ax2.bar(centers, counts, width=width, color="grey")
    ax2.set(xlabel="confidence (max softmax probability)", ylabel="samples")
    return fig


def reliability_figure(calib: dict, path: Path) -> Path:
    return _save(reliability_axes(calib), path)


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
        name = Path(str(it["path"])).name
        name = name if len(name) <= 28 else name[:12] + "..." + name[-13:]
        ax.set_title(label(f"{name}\ntrue: {it['true']}\npred: {it['pred']} ({it['prob']:.2f})"), fontsize=8,
                     color="darkred")
    fig.suptitle("Most confident mistakes")
    return _save(fig, path)


def class_distribution_figure(counts: Dict[str, Dict[str, int]], classes: Sequence[str], path: Path) -> Path:
    """Grouped bars: images per class for each split (``counts``: split -> class -> images)."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(min(max(5.0, 0.45 * n + 2), 24), 4))
    width = 0.8 / max(1, len(counts))
    for k, (split, per) in enumerate(counts.items()):
        xs = np.arange(n) + (k - (len(counts) - 1) / 2) * width
        ax.bar(xs, [per.get(c, 0) for c in classes], width, label=f"{split} ({sum(per.values())})")
    if n <= MAX_TICK_LABELS:
        ax.set_xticks(range(n), labels=[label(c) for c in classes], rotation=45 if n > 6 else 0,
                      ha="right" if n > 6 else "center")
    ax.set(ylabel="images", title="Images per class")
    if counts:  # no split, no bars: a legend would only make matplotlib warn
        ax.legend(fontsize=8)
    return _save(fig, path)


def train_samples_figure(images: np.ndarray, titles: Sequence[str], path: Path, cols: int = 8) -> Path:
    """Grid of augmented training inputs (N, H, W, 3 floats in [0, 1]) with their labels."""
    rows = max(1, (len(images) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im, t in zip(axes.ravel(), images, titles):
        ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
        ax.set_title(label(t), fontsize=7)
    fig.suptitle("Augmented training samples, as the model saw them (de-normalised)")
    return _save(fig, path)
