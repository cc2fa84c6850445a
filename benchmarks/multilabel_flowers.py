"""Multi-label classification, measured: 2x2 mosaics of flower photos, label set = the classes present.

    python benchmarks/multilabel_flowers.py [--data DIR] [--output /tmp/fvt-multilabel] [--images 3000]
        [--tile 64] [--img-size 96] [--epochs 30] [--seeds 0 1 2] [--quick]

1. build (at run time, under --output, never in the repository): the flowers photos of each class are
   split 80/20 into a training pool and a held-out pool (by --build-seed); each mosaic takes 1 to 4
   classes (uniformly), fills its four --tile px tiles with photos of those classes (each at least
   once, in random places) and is labelled with exactly those classes. --images mosaics from the
   training pool go to train.csv, a fifth as many from the held-out pool to test.csv: no photo is in both.
2. fvt: `python -m fvt train --data train.csv --test-data test.csv --task multilabel` (the flowers recipe
   with crops kept large, --scale 0.8 1, so that a crop rarely cuts a whole tile and its label away),
   one run per --seeds value; best.pt (selected by validation mAP on a split of train.csv) is scored
   once on test.csv by the trainer itself (RUN/test/metrics.json).
3. baseline: scikit-learn's one-vs-rest logistic regression on the same features, the pooled
   pre-logits of the same best.pt (`fvt embed` of train.csv and test.csv), probabilities >= 0.5.
4. a markdown table (mAP macro/micro, F1 per class and macro, subset accuracy; mean and spread over
   the seeds) goes to stdout and OUTPUT/multilabel.md.

--quick: 80 tiny mosaics, one seed, one epoch of a few steps at 32 px: a smoke test of the script.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from flowers_common import CLASSES, add_common_arguments, checked_paths, fvt, photos, publish


def pools(data: Path, seed: int) -> tuple:
    """{class: training photos}, {class: held-out photos}: 80/20 per class."""
    rng = random.Random(seed)
    train, test = {}, {}
    for c in CLASSES:
        files = photos(data / c)
        rng.shuffle(files)
        k = len(files) // 5
        test[c], train[c] = files[:k], files[k:]
    return train, test


def mosaic(pool: dict, rng: random.Random, tile: int) -> tuple:
    """(image, sorted classes): 1-4 classes, each in at least one of the four tiles."""
    present = rng.sample(CLASSES, rng.randint(1, 4))
    cells = present + [rng.choice(present) for _ in range(4 - len(present))]
    rng.shuffle(cells)
    canvas = Image.new("RGB", (2 * tile, 2 * tile))
    for i, c in enumerate(cells):
        with Image.open(rng.choice(pool[c])) as im:
            canvas.paste(im.convert("RGB").resize((tile, tile), Image.BICUBIC), ((i % 2) * tile, (i // 2) * tile))
    return canvas, sorted(present)


def build(data: Path, out: Path, n_train: int, tile: int, seed: int) -> tuple:
    train_pool, test_pool = pools(data, seed)
    rng = random.Random(seed + 1)
    for name, pool, n in (("train", train_pool, n_train), ("test", test_pool, max(n_train // 5, 10))):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "labels"])
            for i in range(n):
                img, labels = mosaic(pool, rng, tile)
                img.save(folder / f"{i:05d}.jpg", quality=92)
                w.writerow([f"{name}/{i:05d}.jpg", ";".join(labels)])
    return out / "train.csv", out / "test.csv"


def label_matrix(index_csv: Path, names) -> tuple:
    rows = list(csv.DictReader(open(index_csv)))
    y = np.array([[int(c in r["label"].split(";")) for c in names] for r in rows])
    return y, [r["path"] for r in rows]


def baseline(run: Path, train_csv: Path, test_csv: Path, workers: int) -> dict:
    """One-vs-rest logistic regression on best.pt's pooled pre-logits, probabilities >= 0.5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    feats = {}
    for name, src in (("train", train_csv), ("test", test_csv)):
        fvt("embed", "--checkpoint", run / "best.pt", src, "--output", run / f"emb-{name}", "--workers", workers)
        y, _ = label_matrix(run / f"emb-{name}" / "index.csv", CLASSES)
        feats[name] = (np.load(run / f"emb-{name}" / "embeddings.npy"), y)
    scaler = StandardScaler().fit(feats["train"][0])
    clf = OneVsRestClassifier(LogisticRegression(max_iter=2000)).fit(scaler.transform(feats["train"][0]), feats["train"][1])
    probs = clf.predict_proba(scaler.transform(feats["test"][0]))
    return scores(feats["test"][1], probs, [0.5] * len(CLASSES))


def scores(y: np.ndarray, probs: np.ndarray, thresholds) -> dict:
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    pred = (probs >= np.asarray(thresholds)[None]).astype(int)
    return {"map_macro": average_precision_score(y, probs, average="macro"),
            "map_micro": average_precision_score(y, probs, average="micro"),
            "f1_macro": f1_score(y, pred, average="macro", zero_division=0),
            "subset_accuracy": accuracy_score(y, pred),
            "f1": dict(zip(CLASSES, f1_score(y, pred, average=None, zero_division=0)))}


def fvt_scores(run: Path) -> dict:
    m = json.loads((run / "test" / "metrics.json").read_text())
    return {"map_macro": m["map_macro"], "map_micro": m["map_micro"], "f1_macro": m["f1_macro"],
            "subset_accuracy": m["subset_accuracy"], "f1": {c: m["per_class"][c]["f1-score"] for c in CLASSES}}


def cell(values) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, "/tmp/fvt-multilabel", "tiny mosaics, one seed, a few steps")
    ap.add_argument("--images", type=int, default=3000, help="Training mosaics (test: a fifth as many).")
    ap.add_argument("--tile", type=int, default=64, help="Tile side in px (a mosaic is 2x2 tiles).")
    ap.add_argument("--img-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Training seeds (one run each).")
    ap.add_argument("--build-seed", type=int, default=0, help="Seed of the photo pools and the mosaics.")
    args = ap.parse_args()
    if args.quick:
        args.images, args.tile, args.img_size, args.epochs, args.seeds = 80, 24, 32, 1, args.seeds[:1]
    data, out = checked_paths(args)
    t0 = time.perf_counter()
    train_csv, test_csv = build(data, out / "mosaics", args.images, args.tile, args.build_seed)
    print(f"built {args.images} + {max(args.images // 5, 10)} mosaics in {time.perf_counter() - t0:.0f}s", flush=True)
    results = {"fvt (sigmoid head, thresholds tuned on val)": [], "logistic regression on the same features": []}
    walls = []
    for seed in args.seeds:
        run = out / "runs" / f"seed{seed}"
        flags = ["--config", "flowers", "--img-size", args.img_size, "--epochs", args.epochs,
                 "--scale", "0.8", "1.0", "--crop-pct", "1.0", "--seed", seed, "--workers", args.workers]
        if args.quick:
            flags += ["--batch-size", 8, "--warmup-epochs", 0]
        walls.append(fvt("train", "--data", train_csv, "--test-data", test_csv, "--task", "multilabel",
                         "--output", run, "--exist-ok", *flags))
        results["fvt (sigmoid head, thresholds tuned on val)"].append(fvt_scores(run))
        results["logistic regression on the same features"].append(baseline(run, train_csv, test_csv, args.workers))

    n_test = max(args.images // 5, 10)
    lines = [f"Multi-label flowers mosaics ({args.images} train / {n_test} held-out, 2x2 tiles of {args.tile} px, "
             f"1-4 classes each), faster_vit_nano at {args.img_size} px, {args.epochs} epochs, seeds "
             f"{', '.join(map(str, args.seeds))}; {platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
             f"training wall {statistics.mean(walls):.0f} s per seed. Mean ± std over seeds:", "",
             "| model | mAP macro | mAP micro | F1 macro | subset acc. | " + " | ".join(f"F1 {c}" for c in CLASSES) + " |",
             "|---|---|---|---|---|" + "---|" * len(CLASSES)]
    for name, rs in results.items():
        cells = [cell([r[k] for r in rs]) for k in ("map_macro", "map_micro", "f1_macro", "subset_accuracy")]
        cells += [cell([r["f1"][c] for r in rs]) for c in CLASSES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    publish(lines, out / "multilabel.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
