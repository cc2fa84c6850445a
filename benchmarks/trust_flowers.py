"""Evidence for calibration, abstention and OOD detection on flowers.

    python benchmarks/trust_flowers.py [--data ../shared/datasets/flowers] [--epochs 95] [--work DIR]
        [--checkpoint RUN/best.pt --eval-data DIR] [--keep] [--quick]

A pre-split copy (symlinks; ../shared is only read) holds train 70% / val 15% / test 15% per class
(seeded). configs/flowers.yaml trains on train/; at the end fvt fits the temperature and the abstention
threshold (target precision 0.95) on val/. The numbers come from test/, which neither the weights nor
the temperature saw: ECE before and after temperature scaling, the coverage at precision 0.95 (the best
threshold on test, and the stored one with the precision it really reaches there), and the OOD AUROC /
FPR at 95% TPR (max softmax probability and energy) of test/ against two foreign sets: `fvt demo`'s
digits (1,797 sklearn digits written at 128 px) and 500 uniform-noise images. With --checkpoint, an
existing run is measured on --eval-data (images it did not train on) instead of training here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_flowers import DEFAULT_DATA, IMAGE_SUFFIXES, _link, fvt, train_model  # noqa: E402


def three_way_copy(data: Path, out: Path, seed: int = 0, per_class: int = 0) -> None:
    rng = random.Random(seed)
    for c in sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in (data / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(files)
        files = files[:per_class] if per_class else files
        k = max(1, round(0.15 * len(files)))
        for split, part in (("test", files[:k]), ("val", files[k:2 * k]), ("train", files[2 * k:])):
            for f in part:
                _link(f, out / split / c / f.name)


def foreign_sets(root: Path, n_noise: int, size: int = 128) -> dict:
    from PIL import Image

    from fvt.evaluation.demo import write_digits

    write_digits(root / "digits", size=size)
    noise = root / "noise"
    noise.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_noise):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(noise / f"{i:04d}.png")
    return {"digits": root / "digits", "noise": noise}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=95)
    ap.add_argument("--checkpoint", help="measure this fvt best.pt instead of training one")
    ap.add_argument("--eval-data", help="with --checkpoint: labelled images the run did not train on")
    ap.add_argument("--work")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 12 images per class, a 3-step run")
    args = ap.parse_args()
    data = Path(args.data).expanduser().resolve()
    if args.checkpoint and not args.eval_data:
        print("--checkpoint needs --eval-data (images the run did not train on)", file=sys.stderr)
        return 2
    if not args.checkpoint and not data.is_dir():
        print(f"flowers dataset not found at {data}: set FVT_FLOWERS or --data", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="fvt-trust-bench-"))
    try:
        if args.checkpoint:
            ckpt, test = Path(args.checkpoint).resolve(), Path(args.eval_data).resolve()
        else:
            three_way_copy(data, work / "flowers-3way", per_class=12 if args.quick else 0)
            ckpt = train_model(work / "flowers-3way", work / "run", args.epochs, args.quick)
            test = work / "flowers-3way" / "test"
        foreign = foreign_sets(work / "foreign", 20 if args.quick else 500)
        rows = {}
        for name, folder in foreign.items():
            out = work / f"eval-{name}"
            if fvt("eval", "--checkpoint", ckpt, "--data", test, "--ood", folder, "--output", out, "--workers", "2",
                   "--no-explain").returncode:
                return 1
            rows[name] = json.loads((out / "metrics.json").read_text())
        m = rows["digits"]
        result = {"test_images": m["num_samples"], "top1": m["top1"], "temperature": m["temperature"],
                  "ece_before": m["ece_uncalibrated"], "ece_after": m["ece"],
                  "coverage_at_precision_0.95_best": m["coverage_at_precision"],
                  "stored_threshold": m.get("reject_threshold"), "stored_threshold_coverage": m.get("reject_coverage"),
                  "stored_threshold_precision": m.get("reject_precision"),
                  **{f"ood_{n}_{k}_{s}": r[f"ood_{k}_{s}"] for n, r in rows.items()
                     for k in ("auroc", "fpr95") for s in ("msp", "energy")},
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
        print(json.dumps(result, indent=1))
        (work / "trust_bench.json").write_text(json.dumps(result, indent=1))
        print(f"| ECE before / after | {result['ece_before']:.4f} / {result['ece_after']:.4f} (T {result['temperature']:.3f}) |")
        print(f"| coverage at precision 0.95 | {100 * result['coverage_at_precision_0.95_best']:.1f}% best on test; stored "
              f"threshold answers {100 * (result['stored_threshold_coverage'] or 0):.1f}% at precision "
              f"{result['stored_threshold_precision'] if result['stored_threshold_precision'] is not None else float('nan'):.3f} |")
        for n in foreign:
            print(f"| OOD vs {n} | AUROC MSP {result[f'ood_{n}_auroc_msp']:.4f}, energy {result[f'ood_{n}_auroc_energy']:.4f}"
                  f" | FPR@95 MSP {result[f'ood_{n}_fpr95_msp']:.4f}, energy {result[f'ood_{n}_fpr95_energy']:.4f} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
