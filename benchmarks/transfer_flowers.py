"""Does fine-tuning pay? Transfer between disjoint flower classes, measured with weights trained here.

    python benchmarks/transfer_flowers.py [--data DIR] [--output /tmp/fvt-transfer]
        [--base-epochs 95] [--epochs 30] [--img-size 96] [--per-class 50] [--seeds 0 1 2] [--reuse-base]

1. base:      faster_vit_nano trained from scratch on daisy / dandelion / sunflower with the reference
              recipe (the flowers recipe);
2. finetune:  that run's best.pt fine-tuned on rose vs tulip, ``--per-class`` training images per class,
              with the finetune recipe (head-only first epoch, lower lr, layer decay, EMA);
3. init:      the same images with the scratch recipe (the flowers recipe) started from the base's
              weights: what the weights alone bring, with the recipe held fixed;
4. scratch:   the same rose/tulip images from scratch with the reference recipe, same epochs, input size
              and batch (so the same wall budget, within the warm-up epoch that fine-tuning spends on the head);
5. all scored on every remaining rose / tulip image, at the LAST epoch (best.pt is picked on that same
   set, so it would flatter all); a markdown table goes to stdout and OUTPUT/transfer.md.

Every training is the real command line (`python -m fvt train ...`). The class subsets are folders of
symlinks under --output (outside the repository); nothing is copied. With several --seeds (which
rose/tulip images train), each seed gets its trio and the gains are reported per seed and as a mean.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ("daisy", "dandelion", "sunflower")
TARGET = ("rose", "tulip")
LABELS = {"finetune": "fine-tuned from base (the finetune recipe)",
          "init": "scratch recipe started from base weights", "scratch": "from scratch"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _images(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)


def _link(files, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        (dst / f.name).symlink_to(f.resolve())


def build_base(data: Path, out: Path, base_limit: int) -> Path:
    """OUT/base3/<class>/ as symlinks (all images, or ``base_limit`` per class)."""
    base = out / "base3"
    rng = random.Random(0)
    for c in BASE:
        files = _images(data / c)
        if base_limit:
            files = rng.sample(files, min(base_limit, len(files)))
        _link(files, base / c)
    return base


def build_target(data: Path, out: Path, per_class: int, seed: int) -> tuple:
    """OUT/rose_tulip-seedS/{train,val}/<class>/ as symlinks; returns (folder, n_val)."""
    target = out / f"rose_tulip-seed{seed}"
    if target.exists():
        shutil.rmtree(target)
    rng = random.Random(seed)
    n_val = 0
    for c in TARGET:
        files = _images(data / c)
        rng.shuffle(files)
        if len(files) <= per_class:
            raise SystemExit(f"{data / c} has {len(files)} images; --per-class {per_class} leaves none to test on")
        _link(files[:per_class], target / "train" / c)
        _link(files[per_class:], target / "val" / c)
        n_val += len(files) - per_class
    return target, n_val


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


def better(row: dict) -> float:
    """The better of a run's raw and EMA top-1 (percent)."""
    return max(float(row[k]) for k in ("val_top1", "ema_val_top1") if row.get(k) not in (None, ""))


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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="Which rose/tulip images train; "
                    "one fine-tune / init / scratch trio per seed.")
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
    if (out / "base3").exists():
        shutil.rmtree(out / "base3")
    base = build_base(data, out, args.base_limit)
    size = ["--img-size", args.img_size, "--workers", args.workers, "--amp", args.amp]
    flowers, finetune = "flowers", "finetune"  # the recipes that ship with fvt, by name

    results = []
    if not reuse:
        row, wall = fvt_train("base3", ["--data", base, "--config", flowers, "--epochs", args.base_epochs, *size], runs)
        results.append(("base: daisy/dandelion/sunflower, scratch", "all" if not args.base_limit else
                        f"{args.base_limit}/class", args.base_epochs, wall, row, "its own 20% val split"))
    gains = {}
    for seed in args.seeds:
        target, n_val = build_target(data, out, args.per_class, seed)
        # scored at the last epoch only (the same for all, so their wall times compare)
        two = ["--data", target, "--epochs", args.epochs, "--batch-size", args.batch_size,
               "--eval-every", args.epochs, *size]
        runs_of_seed = {
            # the recipe a user gets: the finetune recipe (head-only first epoch, lower lr, layer decay)
            "finetune": [*two, "--config", finetune, "--model", "faster_vit_nano", "--pretrained", base_ckpt,
                         "--drop-path-rate", "0.05"],
            # the scratch recipe with the base's weights as the start: isolates what the weights bring
            "init": [*two, "--config", flowers, "--pretrained", base_ckpt],
            "scratch": [*two, "--config", flowers],
        }
        rows = {}
        for name, flags in runs_of_seed.items():
            rows[name], wall = fvt_train(f"{name}-seed{seed}", flags, runs)
            results.append((f"rose/tulip, {LABELS[name]} (seed {seed})", f"{args.per_class}/class", args.epochs,
                            wall, rows[name], f"{n_val} held out"))
        for name in ("finetune", "init"):
            gains.setdefault(name, []).append(better(rows[name]) - better(rows["scratch"]))

    lines = [f"Transfer on flowers, faster_vit_nano at {args.img_size} px, {platform.processor() or platform.machine()} "
             f"({os.cpu_count()} cores), last-epoch accuracy:", "",
             "| run | train images | epochs | wall (s) | top-1 EMA (%) | top-1 raw (%) | scored on |",
             "|---|---|---|---|---|---|---|"]
    for name, n, ep, wall, row, on in results:
        lines.append(f"| {name} | {n} | {ep} | {wall:.0f} | {_pct(row, 'ema_val_top1')} | {_pct(row, 'val_top1')} | {on} |")
    # Like with like: each run's better of raw and EMA weights. The recipes use different EMA decays, and a
    # slow EMA that has not caught up in a short run would flatter whichever side has the faster one.
    lines.append("")
    for name, g in gains.items():
        spread = f" (seeds: {', '.join(f'{x:+.1f}' for x in g)})" if len(g) > 1 else ""
        lines.append(f"{LABELS[name]} minus scratch, better of raw/EMA per run, points: "
                     f"mean {statistics.mean(g):+.1f}{spread}.")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "transfer.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
