"""Figures of the trust outputs: coverage vs accuracy (abstention) and OOD score histograms.

The reliability diagrams before/after temperature scaling are ``figures.reliability_figure``
drawn twice, so both diagrams read the same way as the one fvt eval always writes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .figures import _save, plt


def coverage_figure(curve: dict, path: Path, chosen: Optional[dict] = None, target: float = 0.95,
                    title: str = "Answer only when sure: accuracy vs coverage") -> Path:
    """Accuracy of the answered photos against the fraction answered, as the threshold falls;
    the target precision as a line and the chosen threshold as a point."""
    fig, ax = plt.subplots(figsize=(7, 5))
    cov = np.asarray(curve["coverage"], dtype=float)
    prec = np.asarray(curve["precision"], dtype=float)
    ax.plot(cov, prec, lw=2, label="accuracy of the answered photos")
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target precision {target:.2f}")
    if chosen is not None and isinstance(chosen.get("precision"), float) and np.isfinite(chosen["precision"]):
        ax.plot([chosen["coverage"]], [chosen["precision"]], "o", color="tab:red", ms=8,
                label=f"threshold {chosen['threshold']:.3f}: answers {100 * chosen['coverage']:.1f}%")
    low = float(np.nanmin(prec)) if len(prec) else 0.0
    ax.set(xlabel="coverage (fraction of photos answered)", ylabel="accuracy on answered photos",
           xlim=(0, 1.01), ylim=(max(0.0, min(low, target) - 0.05), 1.005), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def ood_figure(scores_in: dict, scores_out: dict, metrics: dict, path: Path) -> Path:
    """One panel per score (MSP, energy): histograms of in-distribution and foreign images."""
    names = list(scores_in)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        a, b = np.asarray(scores_in[name], float), np.asarray(scores_out[name], float)
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label=f"in-distribution ({len(a)})")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label=f"foreign ({len(b)})")
        m = metrics[name]
        ax.set(xlabel=f"{name} score (high = in-distribution)", ylabel="density",
               title=f"{name}: AUROC {m['auroc']:.3f}, FPR@95%TPR {m['fpr_at_95_tpr']:.3f}")
        ax.legend(fontsize=8)
    return _save(fig, path)
