"""Grayscale (--in-chans 1), measured on flowers: fine-tuned from RGB weights adapted by timm's rule, next to RGB.

    python benchmarks/grayscale_flowers.py [--data DIR] [--output /tmp/fvt-gray] [--epochs 95]
        [--finetune-epochs 30] [--rgb-checkpoint RUN/best.pt] [--no-scratch] [--quick]

fvt has no internet here, so the RGB weights are trained first (or given with --rgb-checkpoint):

1. rgb:          faster_vit_nano on the flowers photos, the flowers recipe (the reference recipe);
2. gray-adapted: the same photos converted to one channel (Pillow 'L', written as PNG under --output),
                 --in-chans 1 --pretrained rgb/best.pt: the stem's RGB filters are summed into one
                 (timm.models.adapt_input_conv), the rest is loaded as is; the finetune recipe;
3. gray-scratch: the grayscale photos from scratch with the reference recipe (what the weights bring).

All runs split train/val alike (same file names, --split-seed), so the RGB weights never saw a gray
validation image. Accuracy: top-1 on the validation split at the last epoch, raw and EMA weights.
A markdown table goes to stdout and OUTPUT/grayscale.md.

--quick: 15 photos per class, 32 px, one short epoch per run: a smoke test of the script.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
from pathlib import Path

from PIL import Image

from flowers_common import CLASSES, add_common_arguments, checked_paths, fvt, photos, publish


def convert(data: Path, out: Path, per_class: int = 0) -> tuple:
    """OUT/gray/<class>/<name>.png (one channel) and OUT/rgb/<class>/<name> symlinks of the same photos."""
    for c in CLASSES:
        files = photos(data / c)
        for p in files[:per_class] if per_class else files:
            gray, rgb = out / "gray" / c / (p.stem + ".png"), out / "rgb" / c / p.name
            if not gray.is_file():
                gray.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(p) as im:
                    im.convert("L").save(gray)
            if not rgb.exists():  # same stems as the gray copies (sorted alike): the same train/val split
                rgb.parent.mkdir(parents=True, exist_ok=True)
                rgb.symlink_to(p.resolve())
    return out / "rgb", out / "gray"


def train(name: str, runs: Path, flags: list) -> tuple:
    """(last evaluated metrics.csv row, wall seconds) of `fvt train --output RUNS/NAME FLAGS`."""
    wall = fvt("train", "--output", runs / name, "--exist-ok", *flags)
    rows = [r for r in csv.DictReader(open(runs / name / "metrics.csv")) if r.get("val_top1")]
    return rows[-1], wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap, "/tmp/fvt-gray", "15 photos per class, 32 px, a few steps")
    ap.add_argument("--epochs", type=int, default=95, help="Epochs of the RGB run and the gray scratch run.")
    ap.add_argument("--finetune-epochs", type=int, default=30, help="Epochs of the gray fine-tune.")
    ap.add_argument("--rgb-checkpoint", default=None, help="Use these RGB weights instead of training step 1 "
                    "(a flowers run's best.pt, trained on the same split).")
    ap.add_argument("--no-scratch", action="store_true", help="Skip step 3 (the grayscale run from scratch).")
    args = ap.parse_args()
    data, out = checked_paths(args)
    rgb, gray = convert(data, out, 15 if args.quick else 0)
    runs = out / "runs"
    common = ["--workers", args.workers]
    if args.quick:
        common += ["--img-size", 32, "--batch-size", 8, "--warmup-epochs", 0]
        args.epochs = args.finetune_epochs = 1
    flowers, finetune = "flowers", "finetune"
    rows = []
    ckpt = Path(args.rgb_checkpoint) if args.rgb_checkpoint else runs / "rgb" / "best.pt"
    if not args.rgb_checkpoint:
        row, wall = train("rgb", runs, ["--data", rgb, "--config", flowers, "--epochs", args.epochs, *common])
        rows.append(("RGB, from scratch (the flowers recipe)", args.epochs, wall, row))
    row, wall = train("gray-adapted", runs, ["--data", gray, "--config", finetune, "--model", "faster_vit_nano",
                                             "--in-chans", 1, "--pretrained", ckpt, "--epochs", args.finetune_epochs,
                                             *([] if args.quick else ["--img-size", 96]), *common])
    rows.append(("grayscale, fine-tuned from the RGB weights (stem adapted, the finetune recipe)",
                 args.finetune_epochs, wall, row))
    if not args.no_scratch:
        row, wall = train("gray-scratch", runs, ["--data", gray, "--config", flowers, "--in-chans", 1,
                                                 "--epochs", args.epochs, *common])
        rows.append(("grayscale, from scratch (the flowers recipe)", args.epochs, wall, row))

    lines = [f"Flowers in grayscale vs RGB, faster_vit_nano, {platform.processor() or platform.machine()} "
             f"({os.cpu_count()} cores); val top-1 at the last epoch:", "",
             "| run | epochs | wall (s) | top-1 raw (%) | top-1 EMA (%) |", "|---|---|---|---|---|"]
    for name, epochs, wall, r in rows:
        lines.append(f"| {name} | {epochs} | {wall:.0f} | {float(r['val_top1']):.1f} | "
                     f"{float(r['ema_val_top1']):.1f} |" if r.get("ema_val_top1") else
                     f"| {name} | {epochs} | {wall:.0f} | {float(r['val_top1']):.1f} | - |")
    if args.rgb_checkpoint:
        lines.append(f"\nRGB weights: {ckpt} (trained elsewhere; its accuracy is in its own metrics.csv).")
    publish(lines, out / "grayscale.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
