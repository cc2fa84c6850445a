"""Does fine-tuning pay? Transfer between disjoint flower classes, measured with weights trained here.

    python benchmarks/transfer_flowers.py [--data DIR] [--output /tmp/fvt-transfer]
        [--base-epochs 95] [--epochs 30] [--img-size 96] [--per-class 50]

1. base:      faster_vit_nano trained from scratch on daisy / dandelion / sunflower with the reference
              recipe (configs/flowers.yaml);
2. finetune:  that run's best.pt fine-tuned on rose vs tulip, ``--per-class`` training images per class,
              with configs/finetune.yaml (head-only first epoch, lower lr, layer decay, EMA);
3. scratch:   the same rose/tulip images from scratch with the reference recipe, same epochs, input size
              and batch (so the same wall budget, within the warm-up epoch that fine-tuning spends on the head);
4. both scored on every remaining rose / tulip image, at the LAST epoch (best.pt is picked on that same
   set, so it would flatter both); a markdown table goes to stdout and OUTPUT/transfer.md.

Every training is the real command line (`python -m fvt train ...`). The class subsets are folders of
symlinks under --output (outside the repository); nothing is copied.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ("daisy", "dandelion", "sunflower")
TARGET = ("rose", "tulip")
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _images(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)


def _link(files, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f.name).symlink_to(f.resolve())


def build_subsets(data: Path, out: Path, per_class: int, base_limit: int, seed: int) -> tuple:
    """OUT/base3/<class>/ and OUT/rose_tulip/{train,val}/<class>/ as symlinks; returns (base, target, n_val)."""
    base, target = out / "base3", out / "rose_tulip"
    rng = random.Random(seed)
    for c in BASE:
        files = _images(data / c)
        if base_limit:
            files = rng.sample(files, min(base_limit, len(files)))
        _link(files, base / c)
    n_val = 0
    for c in TARGET:
        files = _images(data / c)
        rng.shuffle(files)
        if len(files) <= per_class:
            raise SystemExit(f"{data / c} has {len(files)} images; --per-class {per_class} leaves none to test on")
        _link(files[:per_class], target / "train" / c)
        _link(files[per_class:], target / "val" / c)
        n_val += len(files) - per_class
    return base, target, n_val


def fvt_train(name: str, flags: list, runs: Path) -> tuple:
    """Run `python -m fvt train`; returns (last metrics.csv row, wall seconds)."""
    out = runs / name
    cmd = [sys.executable, "-m", "fvt", "train", "--output", str(out), *map(str, flags)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=REPO, env={**os.environ, "FVT_PROGRESS": "off"})
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{name}: training failed with exit code {rc}")
    with open(out / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_top1") not in (None, "")]
    return rows[-1], wall


def _pct(row: dict, key: str) -> str:
    v = row.get(key)
    if v in (None, ""):
        return "-"
    return f"{float(v):.1f}"  # metrics.csv holds percents


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FVT_FLOWERS", str(REPO.parent / "shared" / "datasets" / "flowers")))
    ap.add_argument("--output", default="/tmp/fvt-transfer", help="Subset folders and runs go here (not the repo).")
    ap.add_argument("--base-epochs", type=int, default=95, help="Epochs of the 3-class base run (reference: 95).")
    ap.add_argument("--epochs", type=int, default=30, help="Epochs of the fine-tune and of the scratch run.")
    ap.add_argument("--img-size", type=int, default=96, help="Input size of all three runs (reference: 96).")
    ap.add_argument("--batch-size", type=int, default=16, help="Batch of the two 2-class runs (100 images).")
    ap.add_argument("--per-class", type=int, default=50, help="Rose / tulip training images per class.")
    ap.add_argument("--base-limit", type=int, default=0, help="Cap images per base class (0: all; for smoke tests).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--amp", default="auto", help="--amp of all three runs (auto decides per run by a timing).")
    ap.add_argument("--seed", type=int, default=0, help="Which rose/tulip images train.")
    ap.add_argument("--reuse-base", action="store_true", help="Keep OUTPUT/runs/base3 if it has best.pt.")
    args = ap.parse_args()

    data, out = Path(args.data).expanduser().resolve(), Path(args.output).expanduser().resolve()
    if not all((data / c).is_dir() for c in BASE + TARGET):
        print(f"flowers dataset not found at {data} (needs {', '.join(BASE + TARGET)}): set FVT_FLOWERS or --data",
              file=sys.stderr)
        return 2
    if REPO in (out, *out.parents):
        print(f"--output {out} is inside the repository; pick a folder outside it", file=sys.stderr)
        return 2
    runs = out / "runs"
    base_ckpt = runs / "base3" / "best.pt"
    reuse = args.reuse_base and base_ckpt.is_file()
    for sub in ("base3", "rose_tulip"):
        if (out / sub).exists():
            import shutil

            shutil.rmtree(out / sub)
    base, target, n_val = build_subsets(data, out, args.per_class, args.base_limit, args.seed)
    size = ["--img-size", args.img_size, "--workers", args.workers, "--amp", args.amp]
    flowers, finetune = REPO / "configs" / "flowers.yaml", REPO / "configs" / "finetune.yaml"

    results = []
    if not reuse:
        row, wall = fvt_train("base3", ["--data", base, "--config", flowers, "--epochs", args.base_epochs, *size], runs)
        results.append(("base: daisy/dandelion/sunflower, scratch", "all" if not args.base_limit else
                        f"{args.base_limit}/class", args.base_epochs, wall, row, "its own 20% val split"))
    # the same evaluation cadence for both, so their wall times compare (the last epoch is always evaluated)
    two = ["--data", target, "--epochs", args.epochs, "--batch-size", args.batch_size, "--eval-every", 5, *size]
    row, wall = fvt_train("finetune", [*two, "--config", finetune, "--model", "faster_vit_nano",
                                       "--pretrained", base_ckpt, "--drop-path-rate", "0.05"], runs)
    results.append(("rose/tulip, fine-tuned from base", f"{args.per_class}/class", args.epochs, wall, row, f"{n_val} held out"))
    row, wall = fvt_train("scratch", [*two, "--config", flowers], runs)
    results.append(("rose/tulip, from scratch", f"{args.per_class}/class", args.epochs, wall, row, f"{n_val} held out"))

    lines = [f"Transfer on flowers, faster_vit_nano at {args.img_size} px, {platform.processor() or platform.machine()} "
             f"({os.cpu_count()} cores), last-epoch accuracy:", "",
             "| run | train images | epochs | wall (s) | top-1 EMA (%) | top-1 raw (%) | scored on |",
             "|---|---|---|---|---|---|---|"]
    for name, n, ep, wall, row, on in results:
        lines.append(f"| {name} | {n} | {ep} | {wall:.0f} | {_pct(row, 'ema_val_top1')} | {_pct(row, 'val_top1')} | {on} |")
    ft, sc = results[-2][4], results[-1][4]
    # Like with like: each run's raw weights, each run's EMA, and each run's better of the two. The two
    # recipes use different EMA decays, and a slow EMA that has not caught up in a short run would flatter
    # whichever side has the faster one, so the headline is the better-of-two per run.
    gains = []
    for label, keys in (("raw", ("val_top1",)), ("EMA", ("ema_val_top1",)), ("better of raw/EMA", ("val_top1", "ema_val_top1"))):
        a = [float(ft[k]) for k in keys if ft.get(k) not in (None, "")]
        b = [float(sc[k]) for k in keys if sc.get(k) not in (None, "")]
        if a and b:
            gains.append(f"{label} {max(a) - max(b):+.1f}")
    lines += ["", "Fine-tuning minus scratch, points: " + ", ".join(gains) + "."]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "transfer.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
