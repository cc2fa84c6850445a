"""What the flowers task benchmarks share (multilabel_flowers, grayscale_flowers, knn_tta_flowers): the
dataset and output checks, running `python -m fvt ...`, and writing the result table."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("daisy", "dandelion", "rose", "sunflower", "tulip")
IMAGE_EXT = {".jpg", ".jpeg", ".png"}


def add_common_arguments(ap: argparse.ArgumentParser, output: str, quick: str) -> None:
    ap.add_argument("--data", default=os.environ.get("FVT_FLOWERS", str(REPO.parent / "shared" / "datasets" / "flowers")))
    ap.add_argument("--output", default=output, help="Built data and runs go here (not the repository).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help=f"Smoke test: {quick}.")


def checked_paths(args) -> tuple:
    """(data, output) resolved; SystemExit(2) with one line when flowers is missing or output is in the repo."""
    data, out = Path(args.data).expanduser().resolve(), Path(args.output).expanduser().resolve()
    if not all((data / c).is_dir() for c in CLASSES):
        print(f"flowers dataset not found at {data}: set FVT_FLOWERS or --data", file=sys.stderr)
        raise SystemExit(2)
    if REPO in (out, *out.parents):
        print(f"--output {out} is inside the repository; pick a folder outside it", file=sys.stderr)
        raise SystemExit(2)
    return data, out


def photos(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT)


def fvt(*args) -> float:
    """Run `python -m fvt ARGS` from the repository; returns its wall seconds, exits on failure."""
    cmd = [sys.executable, "-m", "fvt", *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    if subprocess.call(cmd, cwd=REPO, env={**os.environ, "FVT_PROGRESS": "off"}) != 0:
        raise SystemExit(f"fvt {args[0]} failed")
    return time.perf_counter() - t0


def publish(lines: list, path: Path) -> None:
    text = "\n".join(lines)
    print("\n" + text)
    path.write_text(text + "\n")
