"""Evidence for `fvt data audit`: plant known faults in a copy of the flowers set and count what the
audit finds.

    python benchmarks/audit_flowers.py [--data ../shared/datasets/flowers] [--checkpoint RUN/best.pt]
        [--work DIR] [--keep] [--quick]

The copy (under --work, default a temporary folder; ../shared is only read) is pre-split 80/20 per class
(seeded) as train/ and val/, clean files as symlinks. Faults, with the ground truth in faults.json:
  * 5% of the training images get another class (the file is filed under a random other class);
  * 30 training images are re-saved at another size (x0.6-1.5) and JPEG quality (40-85), a third of them
    also slightly cropped (3-8% a side): half into another class of train (conflicting labels), half into
    val under their own class (a leak across the split).
The embedding model is --checkpoint (an fvt best.pt; official ImageNet weights cannot be downloaded here),
else a flowers model this script trains on the faulty copy (configs/flowers.yaml, --embed-epochs), as a
user without pretrained weights would. Then `fvt data audit` runs on the copy (a subprocess: the time is
what a user waits, start-up and scan included) and the script prints, per fault kind, precision and
recall, the recall of flipped labels within the top 2x-as-many ranked label issues (goal >= 80%), the
share of planted re-encoded duplicates found (goal >= 95%), the false alarms, and the wall time. The
copy is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = os.environ.get("FVT_FLOWERS", str(REPO.parent / "shared" / "datasets" / "flowers"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def fvt(*args, **kw) -> subprocess.CompletedProcess:
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x)
    cmd = [sys.executable, "-m", "fvt", *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, "FVT_PROGRESS": "off", "PYTHONPATH": path}, **kw)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.abspath(src), dst)


def _resave(src: Path, dst: Path, rng: random.Random, crop: bool) -> dict:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        c = rng.uniform(0.03, 0.08) if crop else 0.0
        w, h = im.size
        im = im.crop((round(w * c), round(h * c), w - round(w * c), h - round(h * c)))
        scale, quality = rng.choice([0.6, 0.75, 1.25, 1.5]), rng.randint(40, 85)
        im = im.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.BICUBIC)
        dst.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        dst.write_bytes(buf.getvalue())
    return {"scale": scale, "quality": quality, "crop": round(c, 3)}


def make_faulty_copy(data: Path, out: Path, seed: int = 0, flip_frac: float = 0.05, dups: int = 30,
                     per_class: int = 0) -> dict:
    """The pre-split copy with planted faults; returns (and writes out/faults.json) the ground truth,
    paths relative to ``out``. ``per_class`` > 0 keeps only that many images per class (smoke runs)."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    train, val = {}, {}
    for c in classes:
        files = sorted(p for p in (data / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rng.shuffle(files)
        files = files[:per_class] if per_class else files
        k = max(1, round(0.2 * len(files)))
        val[c], train[c] = files[:k], files[k:]
    pool = [(c, f) for c in classes for f in train[c]]
    flipped = set(rng.sample(range(len(pool)), max(1, round(flip_frac * len(pool)))))
    left = [i for i in range(len(pool)) if i not in flipped]
    copied = rng.sample(left, min(dups, len(left)))
    truth = {"seed": seed, "classes": classes, "flipped": [], "duplicates": [], "train": 0, "val": 0}
    for i, (c, f) in enumerate(pool):
        if i in flipped:
            new = rng.choice([x for x in classes if x != c])
            _link(f, out / "train" / new / f.name)
            truth["flipped"].append({"path": f"train/{new}/{f.name}", "true": c, "given": new})
        else:
            _link(f, out / "train" / c / f.name)
        truth["train"] += 1
    for c in classes:
        for f in val[c]:
            _link(f, out / "val" / c / f.name)
            truth["val"] += 1
    for n, i in enumerate(copied):
        c, f = pool[i]
        into_val = n % 2 == 1
        dest_class = c if into_val else rng.choice([x for x in classes if x != c])
        rel = f"{'val' if into_val else 'train'}/{dest_class}/resaved_{n:03d}_{f.stem}.jpg"
        how = _resave(f, out / rel, rng, crop=n % 3 == 2)
        truth["duplicates"].append({"path": rel, "source": f"train/{c}/{f.name}", "kind":
                                    "split_leak" if into_val else "conflicting_labels", **how})
    (out / "faults.json").write_text(json.dumps(truth, indent=1))
    return truth


def train_model(copy: Path, run: Path, epochs: int, quick: bool, *extra) -> Path:
    """A flowers run on ``copy`` with configs/flowers.yaml (``quick``: a 3-step smoke run)."""
    args = ["train", "--data", copy, "--output", run, "--config", REPO / "configs" / "flowers.yaml",
            "--epochs", epochs, "--log-to", "none", *extra]
    if quick:
        args += ["--img-size", "64", "--max-steps", "3", "--batch-size", "8", "--workers", "0", "--eval-every", "1"]
    if fvt(*args).returncode != 0:
        raise SystemExit(f"training {run} failed")
    best = run / "best.pt"
    return best if best.is_file() else run / "last.pt"


def find_data(path: str):
    """The flowers folder, or None after saying where it was looked for."""
    data = Path(path).expanduser().resolve()
    if data.is_dir():
        return data
    print(f"flowers dataset not found at {data}: set FVT_FLOWERS or --data", file=sys.stderr)
    return None


def clean_up(args, work: Path, copy: Path) -> None:
    """Remove the copy (and a temporary work folder) unless --keep."""
    if not args.keep:
        shutil.rmtree(copy, ignore_errors=True)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def read_audit(folder: Path) -> list:
    with open(folder / "audit.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def score(rows: list, truth: dict) -> dict:
    flipped = {f["path"] for f in truth["flipped"]}
    ranked = [r["path"] for r in rows if r["issue"] == "label_issue"]   # audit.csv: most likely first
    hits = [p for p in ranked if p in flipped]
    top = ranked[:2 * len(flipped)]
    dup_kinds = ("conflicting_labels", "split_leak", "near_duplicate")
    pairs = {frozenset((r["path"], r["other"])) for r in rows if r["issue"] in dup_kinds}
    planted = {frozenset((d["path"], d["source"])): d for d in truth["duplicates"]}
    found = [d for key, d in planted.items() if key in pairs]
    others = [p for p in pairs if p not in planted]  # not planted: the set's own duplicates, or false alarms

    def of(ds, kind):
        return sum(1 for d in ds if d["kind"] == kind)

    return {
        "flipped": len(flipped), "label_issues_flagged": len(ranked),
        "label_precision": len(hits) / max(1, len(ranked)), "label_recall": len(hits) / max(1, len(flipped)),
        "label_recall_top2x": sum(1 for p in top if p in flipped) / max(1, len(flipped)),
        "duplicates_planted": len(planted), "duplicates_found": len(found),
        "duplicate_recall": len(found) / max(1, len(planted)),
        "found_conflicting": f"{of(found, 'conflicting_labels')}/{of(truth['duplicates'], 'conflicting_labels')}",
        "found_leak": f"{of(found, 'split_leak')}/{of(truth['duplicates'], 'split_leak')}",
        "found_cropped": f"{sum(1 for d in found if d['crop'])}/{sum(1 for d in truth['duplicates'] if d['crop'])}",
        "other_duplicate_pairs": sorted(" = ".join(sorted(p)) for p in others),
        "duplicate_false_alarm_rate": len(others) / max(1, len(pairs)),
        "outliers": len({r["path"] for r in rows if r["issue"] == "outlier"}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--checkpoint", help="embedding model (fvt best.pt); default: train one on the faulty copy")
    ap.add_argument("--embed-epochs", type=int, default=30, help="epochs of that model [default: 30, ~12 min]")
    ap.add_argument("--work", help="folder for the copy, the run and the audit [default: a temporary folder]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the copy and the outputs")
    ap.add_argument("--quick", action="store_true", help="smoke test: 12 images per class, a 3-step model")
    args = ap.parse_args()
    data = find_data(args.data)
    if data is None:
        return 2
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="fvt-audit-bench-"))
    copy = work / "flowers-faulty"
    if copy.exists():
        print(f"{copy} exists; give an empty --work", file=sys.stderr)
        return 2
    try:
        truth = make_faulty_copy(data, copy, args.seed, dups=4 if args.quick else 30,
                                 per_class=12 if args.quick else 0)
        print(f"copy: {truth['train']} train + {truth['val']} val images, {len(truth['flipped'])} flipped, "
              f"{len(truth['duplicates'])} re-saved copies -> {copy}")
        ckpt = Path(args.checkpoint).resolve() if args.checkpoint else \
            train_model(copy, work / "embed-run", args.embed_epochs, args.quick, "--no-calibrate")
        t0 = time.perf_counter()
        rc = fvt("data", "audit", copy, "--pretrained", ckpt, "--output", work / "audit", "--workers", "2").returncode
        wall = time.perf_counter() - t0
        if rc != 0:
            return rc
        result = {**score(read_audit(work / "audit"), truth), "audit_wall_s": round(wall, 1),
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "model": str(ckpt)}
        print(json.dumps(result, indent=1))
        (work / "audit_bench.json").write_text(json.dumps(result, indent=1))
        print(f"| flipped labels ({result['flipped']}) | {result['label_precision']:.1%} | {result['label_recall']:.1%} "
              f"| {result['label_recall_top2x']:.1%} |\n| re-saved copies ({result['duplicates_planted']}) | | "
              f"{result['duplicate_recall']:.1%} ({result['found_conflicting']} conflicting, {result['found_leak']} "
              f"leaks, {result['found_cropped']} cropped) | other pairs: {len(result['other_duplicate_pairs'])} |\n"
              f"| audit wall time | {wall:.0f} s |")
    finally:
        clean_up(args, work, copy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
