"""Reference result: train from scratch on ../shared/datasets/flowers with the flowers recipe (fvt/recipes/flowers.yaml)
and report top-1 on the run's own validation split, wall time and throughput.

    python benchmarks/flowers_accuracy.py [--data DIR] [--output runs/flowers-ref] [--nproc N]
        [-- extra fvt train flags]

It runs the real command line in a subprocess, so the number is what a user gets, start-up, data
scan and evaluation included; then it reads the run's metrics.csv. With --nproc N > 1 the command
is `torchrun --standalone --nproc_per_node N -m fvt train ...` (DDP over gloo, one thread per
process): on a 2-core CPU two one-thread processes push this small model through ~1.3-1.6x more
images per second than one two-thread process (global batch 2x the per-process batch).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FVT_FLOWERS", str(REPO.parent / "shared" / "datasets" / "flowers")))
    ap.add_argument("--config", default="flowers", help="recipe name or YAML file [default: flowers]")
    ap.add_argument("--output", default="runs/flowers-ref",
                    help="run folder; relative paths (here and in --data, --config) are from the current folder")
    ap.add_argument("--nproc", type=int, default=1, help="training processes (torchrun) on this machine")
    ap.add_argument("extra", nargs="*", help="extra `fvt train` flags (after --)")
    args = ap.parse_args()
    # Relative paths mean the user's current folder, as for `fvt train` itself; the child runs
    # there too (so relative paths among the extra flags agree) and finds this fvt via PYTHONPATH.
    args.data, args.output = (str(Path(p).expanduser().resolve()) for p in (args.data, args.output))
    if Path(args.config).expanduser().is_file():  # a file; otherwise a recipe name, found from any folder
        args.config = str(Path(args.config).expanduser().resolve())
    if not Path(args.data).is_dir():
        print(f"flowers dataset not found at {args.data}: set FVT_FLOWERS or --data", file=sys.stderr)
        return 2

    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}"] \
        if args.nproc > 1 else [sys.executable]
    cmd = [*launch, "-m", "fvt", "train", "--data", args.data, "--config", args.config,
           "--output", args.output, *args.extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x)
    rc = subprocess.call(cmd, env={**os.environ, "FVT_PROGRESS": "off", "PYTHONPATH": path})
    wall = time.perf_counter() - t0
    if rc != 0:
        print(f"training failed with exit code {rc}", file=sys.stderr)
        return rc

    with open(Path(args.output) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    def best(key):
        vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        return max(vals) if vals else float("nan")

    last = rows[-1]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "wall_time_s": round(wall, 1),
        "processes": args.nproc,
        "epochs": len(rows),
        "final_top1": float(last.get("val_top1") or "nan"),
        "final_ema_top1": float(last.get("ema_val_top1") or "nan"),
        "best_top1": best("val_top1"),
        "best_ema_top1": best("ema_val_top1"),
    }
    print(json.dumps(summary, indent=2))
    (Path(args.output) / "reference_result.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
