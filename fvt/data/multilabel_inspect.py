"""What ``fvt data inspect`` says about multi-label data: images per label, labels per image and which
labels occur together (text and a co-occurrence heat map, also used by the evaluation report)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .multilabel import LabelSets, label_stats

MAX_MATRIX = 15   # larger label sets: the most frequent pairs are listed instead of the matrix
MAX_PAIRS = 15


def label_report(items: LabelSets, classes: Sequence[str]) -> List[str]:
    """Lines: images per label (share of images), labels per image, co-occurrence."""
    st = label_stats(items, classes)
    n = max(len(items), 1)
    width = max([len(c) for c in classes] + [5])
    lines = [f"{'label':<{width}}  {'images':>7}  {'share':>6}", f"{'-' * width}  {'-' * 7}  {'-' * 6}"]
    lines += [f"{c:<{width}}  {k:>7}  {100 * k / n:>5.1f}%" for c, k in st["counts"].items()]
    hist = ", ".join(f"{k}: {v}" for k, v in st["labels_per_image"].items())
    mean = sum(k * v for k, v in st["labels_per_image"].items()) / n
    lines.append(f"labels per image: {hist} (mean {mean:.2f})")
    if st["labels_per_image"].get(0):
        lines.append(f"  {st['labels_per_image'][0]} images carry none of the labels (negatives for every label)")
    co = np.asarray(st["cooccurrence"])
    if len(classes) <= MAX_MATRIX:
        lines.append("co-occurrence (images holding both labels; diagonal: the label's images):")
        w = max(5, *(len(str(v)) for v in co.ravel()))
        lines.append(" " * (width + 2) + " ".join(f"{c[:w]:>{w}}" for c in classes))
        lines += [f"{c:<{width}}  " + " ".join(f"{v:>{w}}" for v in row) for c, row in zip(classes, co)]
    else:
        pairs = sorted(((int(co[i, j]), classes[i], classes[j]) for i in range(len(classes))
                        for j in range(i + 1, len(classes)) if co[i, j]), reverse=True)[:MAX_PAIRS]
        lines.append("most frequent label pairs: " + (", ".join(f"{a}+{b} {k}" for k, a, b in pairs) or "none"))
    return lines


def cooccurrence_figure(matrix, classes: Sequence[str], path: Path, title: Optional[str] = None,
                        row_totals: Optional[Sequence[float]] = None) -> Path:
    """Heat map of a label x label matrix, each row divided by ``row_totals`` (default: the diagonal, so
    a cell is the share of the row label's images that also hold the column label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        totals = np.asarray(row_totals, dtype=np.float64) if row_totals is not None else np.diag(m)
        norm = np.nan_to_num(m / totals[:, None])
    n = len(classes)
    side = min(max(4.5, 0.45 * n + 2.5), 24)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    names = [str(c).replace("$", r"\$") for c in classes]
    if n <= 60:
        ax.set_xticks(range(n), labels=names, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels=names)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "Label co-occurrence (cell: images with both; colour: share of the row label's images)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
