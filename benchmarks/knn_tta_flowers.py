"""Embeddings and test-time augmentation on flowers: k-NN accuracy from `fvt embed` (trained vs untrained
network) and `fvt eval --tta none|flip|crops` on the validation split.

    python benchmarks/knn_tta_flowers.py [--checkpoint RUN/best.pt] [--data DIR] [--output /tmp/fvt-knn-tta]
        [--epochs 95] [--k 1 5 20] [--quick]

1. weights: --checkpoint (a flowers run's best.pt, e.g. the RGB run of benchmarks/grayscale_flowers.py,
   whose split.json lies beside it), else a run of the flowers recipe trained here;
2. an untrained network: the same architecture, classes and preprocessing at its random initialisation
   (torch seed 0), written as an fvt checkpoint under --output;
3. k-NN: `fvt embed` of the flowers folder with each checkpoint (pooled pre-logits; embedding img/s
   measured), then scikit-learn's KNeighborsClassifier (cosine) fit on the run's training split
   (split.json) and scored on its validation split, for each --k; `fvt eval --knn K` is run once as a
   cross-check of the same number;
4. TTA: `fvt eval --tta none|flip|crops` of the trained checkpoint on the run's validation split:
   top-1, loss, ECE and wall time.

Markdown tables go to stdout and OUTPUT/knn_tta.md. --quick: 10 photos per class, 32 px, a few steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from flowers_common import CLASSES, add_common_arguments, checked_paths, fvt, photos, publish


def subset(data: Path, out: Path, per_class: int) -> Path:
    """OUT/subset/<class>/ with the first ``per_class`` photos of each class, as symlinks (smoke tests)."""
    for c in CLASSES:
        for p in photos(data / c)[:per_class]:
            link = out / "subset" / c / p.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(p.resolve())
    return out / "subset"


def untrained(ckpt: Path, out: Path) -> Path:
    """The same model, classes and preprocessing as ``ckpt`` at its random initialisation."""
    import torch

    import fvt

    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = fvt.create_model(ck["model_name"], **ck["model_kwargs"])
    keep = ("fvt_version", "model_name", "model_kwargs", "classes", "preprocessing", "config")
    new = {**{k: ck[k] for k in keep if k in ck}, "state_dict": model.state_dict(), "state_dict_ema": None,
           "epoch": 0, "step": 0, "metrics": {}, "selected_weights": "raw"}
    path = out / "untrained" / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(new, path)
    if (ckpt.parent / "split.json").is_file():  # fvt eval --knn reads the run's split beside the checkpoint
        (path.parent / "split.json").write_bytes((ckpt.parent / "split.json").read_bytes())
    return path


def knn_accuracy(emb_dir: Path, split: dict, k: int) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    x = np.load(emb_dir / "embeddings.npy")
    rows = list(csv.DictReader(open(emb_dir / "index.csv")))
    where = {str(Path(r["path"]).resolve()): i for i, r in enumerate(rows)}
    root = Path(split["data"])
    parts = {s: [(where[str((root / rel).resolve())], c) for rel, c in split[s] if str((root / rel).resolve()) in where]
             for s in ("train", "val")}
    tr, va = parts["train"], parts["val"]
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    knn.fit(x[[i for i, _ in tr]], [c for _, c in tr])
    return 100.0 * float(np.mean(knn.predict(x[[i for i, _ in va]]) == np.array([c for _, c in va])))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, "/tmp/fvt-knn-tta", "10 photos per class, 32 px, a few steps")
    ap.add_argument("--checkpoint", default=None, help="A trained flowers best.pt (with split.json beside it).")
    ap.add_argument("--epochs", type=int, default=95, help="Epochs when no --checkpoint is given.")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 5, 20])
    args = ap.parse_args()
    data, out = checked_paths(args)
    if args.quick:
        data, args.k = subset(data, out, 10), [1, 3]
    if args.checkpoint:
        ckpt = Path(args.checkpoint).resolve()
    else:
        ckpt = out / "runs" / "rgb" / "best.pt"
        quick = ["--img-size", 32, "--batch-size", 8, "--warmup-epochs", 0] if args.quick else []
        fvt("train", "--data", data, "--config", "flowers", "--epochs", 1 if args.quick else
            args.epochs, "--output", ckpt.parent, "--exist-ok", "--workers", args.workers, *quick)
    split = json.loads((ckpt.parent / "split.json").read_text())
    n_images = sum(len(split[s]) for s in ("train", "val"))
    weights = {"trained": ckpt, "untrained (random init)": untrained(ckpt, out)}
    lines = [f"Flowers, {platform.processor() or platform.machine()} ({os.cpu_count()} cores); checkpoint {ckpt}", "",
             "k-NN on `fvt embed` vectors (pooled pre-logits, cosine), fit on the training split, scored on the "
             f"validation split ({len(split['val'])} images):", "",
             "| weights | " + " | ".join(f"k={k} top-1 (%)" for k in args.k) + " | embed img/s | fvt eval --knn "
             f"{args.k[0]} |", "|---|" + "---|" * (len(args.k) + 2)]
    for name, path in weights.items():
        emb = out / "embeddings" / name.split()[0]
        wall = fvt("embed", "--checkpoint", path, data, "--output", emb, "--workers", args.workers)
        accs = [knn_accuracy(emb, split, k) for k in args.k]
        fvt("eval", "--checkpoint", path, "--knn", args.k[0], "--output", out / "knn-eval" / name.split()[0],
            "--workers", args.workers)
        check = json.loads((out / "knn-eval" / name.split()[0] / "metrics.json").read_text())["knn_top1"]
        lines.append(f"| {name} | " + " | ".join(f"{a:.1f}" for a in accs) + f" | {n_images / wall:.0f} | {check:.1f} |")
    lines += ["", "Test-time augmentation, `fvt eval` of the trained checkpoint on its validation split:", "",
              "| --tta | top-1 (%) | loss | ECE | wall (s) |", "|---|---|---|---|---|"]
    for mode in ("none", "flip", "crops"):
        ev = out / "tta" / mode
        wall = fvt("eval", "--checkpoint", ckpt, "--tta", mode, "--output", ev, "--workers", args.workers)
        m = json.loads((ev / "metrics.json").read_text())
        lines.append(f"| {mode} | {m['top1']:.2f} | {m['loss']:.4f} | {m['ece']:.4f} | {wall:.0f} |")
    publish(lines, out / "knn_tta.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
