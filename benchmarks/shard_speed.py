"""Image folder vs WebDataset shards through fvt's training pipeline (``data_speed.py --shards``).

    python benchmarks/data_speed.py --shards [--data DIR] [--synthetic 50000] [--workers 1 2]
        [--size 224] [--batch-size 64] [--work-dir /tmp/fvt_shard_speed] [--no-cold] [--max-images N]

For each data set (--data, default the flowers folder; and --synthetic N generated 256 px
JPEGs, 0 to skip) the folder is sharded once with ``fvt data shard`` (--val-split 0), then one
full training epoch is timed per (source, workers, cache) row: decode + RandAugment + random
erasing + collate, exactly what ``fvt train`` runs, no model. Reported: img/s, CPU-seconds per
image (this process plus its DataLoader workers) and the start-up time (the folder's scan of
every file, the shards' index read).

Cold cache: ``echo 3 > /proc/sys/vm/drop_caches`` when we may (root outside a container), else
every file of the source is evicted with ``posix_fadvise(DONTNEED)`` after ``sync`` (works
without privileges on Linux page cache; the row says which). Warm rows first read every file of
the source once. The clock starts at the first batch (worker start-up is a per-epoch constant,
not throughput). ``--max-images N`` times the first N images of each epoch only (a 50k-image epoch
takes minutes per row on 2 cores). Other processes on the machine lower every number: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fvt.config import Config  # noqa: E402
from fvt.data import build_data, build_train_loader  # noqa: E402
from fvt.data.shards import write_shards  # noqa: E402

FLOWERS = Path(os.environ.get("FVT_FLOWERS", ROOT.parent / "shared" / "datasets" / "flowers"))


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers, once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def drop_cache(root: Path) -> str:
    """Evict ``root``'s files from the page cache; returns how."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "fadvise"


def generate(dst: Path, n: int, side: int = 256, source: Path = FLOWERS) -> Path:
    """``n`` JPEGs of ``side`` px in 5 class folders, once: the flowers photos upscaled and shifted
    (photo-like compressibility), or smooth random images when the flowers are absent."""
    import numpy as np
    from PIL import Image

    done = dst / ".complete"
    if done.is_file() and done.read_text() == f"{n} {side}":
        return dst
    photos = sorted(source.rglob("*.jpg"))[:500] if source.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(n):
        out = dst / f"class_{i % 5}" / f"{i:06d}.jpg"
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if photos:
            im = Image.open(photos[i % len(photos)]).convert("RGB").resize((side + 32, side + 32), Image.BICUBIC)
            dx, dy = (i // len(photos)) % 32, (i // (32 * len(photos))) % 32
            im = im.crop((dx, dy, dx + side, dy + side))
        else:
            small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            im = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        im.save(out, quality=90)
    done.write_text(f"{n} {side}")
    return dst


def warm_cache(root: Path) -> None:
    """Read every file under ``root`` once, so the timed epoch finds all of them in the page cache."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 22):
                    pass


def epoch(data: Path, workers: int, size: int, batch: int, cold: bool, max_images: int = 0) -> dict:
    """One timed training epoch (or its first ``max_images`` images) from ``data``."""
    cfg = Config()
    cfg.data.data, cfg.model.img_size = str(data), [size]
    cfg.data.val_split, cfg.data.workers, cfg.data.batch_size = 0.0, workers, batch
    t = time.perf_counter()
    bundle = build_data(cfg, None)
    start_s = time.perf_counter() - t
    loader = build_train_loader(bundle, cfg, seed=0)
    loader.train_sampler.set_epoch(0)
    if cold:
        how = drop_cache(data)
    else:  # the whole source, not only what a partial epoch reads, so that every read is a cache hit
        warm_cache(data)
        how = "warm"
    c, n, t = cpu_seconds(), 0, None
    for b in loader:
        if t is None:  # steady state: worker start-up (and the shuffle buffer's first fill) are not timed
            t = time.perf_counter()
            continue
        n += 0 if b is None else len(b[0])
        if max_images and n >= max_images:
            break
    wall = time.perf_counter() - t
    del loader
    gc.collect()  # joins the workers, so their CPU time is counted
    cpu = cpu_seconds() - c
    return {"img_s": n / wall, "cpu_ms": 1000 * cpu / max(n, 1), "start_s": start_s, "cache": how, "n": n}


def read_rate(folder: Path, shards: Path, limit: int) -> dict:
    """Cold-cache I/O only, no decoding: ``limit`` files of the folder in a shuffled order (what a
    training epoch reads) against the same number of bytes of the shards, read in order."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
    random.Random(0).shuffle(files)
    files = files[:limit or len(files)]
    how = drop_cache(folder)
    t, size = time.perf_counter(), 0
    for path in files:
        with open(path, "rb") as f:
            size += len(f.read())
    folder_s = time.perf_counter() - t
    drop_cache(shards)
    t, got = time.perf_counter(), 0
    for path in sorted(shards.glob("*.tar")):
        with open(path, "rb") as f:
            while got < size and (chunk := f.read(1 << 20)):
                got += len(chunk)
    shards_s = time.perf_counter() - t
    return {"folder": len(files) / folder_s, "shards": len(files) * (got / size) / shards_s, "cache": how}


def shard_rows(name: str, folder: Path, shards: Path, workers, size: int, batch: int, cold: bool,
               max_images: int = 0, reps: int = 1) -> list:
    """(name, cache, workers, {"folder": [results], "shards": [results]}) per row; the two sources
    alternate within a row, so a burst of load hits both."""
    rows = []
    for cache in (["warm", "cold"] if cold else ["warm"]):
        for w in workers:
            got = {"folder": [], "shards": []}
            for rep in range(reps):
                for source, path in (("folder", folder), ("shards", shards))[::1 if rep % 2 == 0 else -1]:
                    r = epoch(path, w, size, batch, cache == "cold", max_images)
                    got[source].append(r)
                    print(f"{name} {cache} ({r['cache']}), {w} workers, {source}: {r['img_s']:.0f} img/s, "
                          f"{r['cpu_ms']:.1f} CPU-ms/img, start {r['start_s']:.1f} s ({r['n']} images)",
                          flush=True)
            rows.append((name, cache, w, got))
    return rows


def _med(results: list, key: str) -> float:
    return statistics.median(r[key] for r in results)


def _cell(results: list) -> str:
    rates = [r["img_s"] for r in results]
    return f"{statistics.median(rates):.0f}" + (f" ({min(rates):.0f}-{max(rates):.0f})" if len(rates) > 1 else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="folder vs WebDataset shards through fvt's training pipeline")
    ap.add_argument("--data", type=Path, default=FLOWERS)
    ap.add_argument("--synthetic", type=int, default=50000, help="generated 256 px JPEGs (0: skip)")
    ap.add_argument("--synthetic-side", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=224, help="training input size")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", default="256MB")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/fvt_shard_speed"))
    ap.add_argument("--no-cold", action="store_true", help="warm page cache rows only")
    ap.add_argument("--reps", type=int, default=1, help="repetitions per row (median, min-max)")
    ap.add_argument("--max-images", type=int, default=0,
                    help="time only the first N images of each epoch (0: the whole epoch); the cache state "
                         "is that of the whole source either way")
    args = ap.parse_args(argv)
    logging.getLogger("fvt.data").setLevel(logging.ERROR)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    sets = []
    if args.data.is_dir():
        sets.append(("flowers" if args.data == FLOWERS else args.data.name, args.data))
    else:
        print(f"(skipping --data {args.data}: not found)")
    if args.synthetic:
        sets.append((f"{args.synthetic} x {args.synthetic_side} px",
                     generate(args.work_dir / f"synthetic_{args.synthetic}_{args.synthetic_side}", args.synthetic,
                              args.synthetic_side)))
    rows, io_rows = [], []
    for name, folder in sets:
        shards = args.work_dir / f"shards_{folder.name}"
        write_shards(str(folder), str(shards), args.shard_size, val_split=0.0, echo=lambda *_: None)
        rows += shard_rows(name, folder, shards, args.workers, args.size, args.batch_size, not args.no_cold,
                           args.max_images, args.reps)
        if not args.no_cold:
            io_rows.append((name, read_rate(folder, shards, args.max_images)))
    print("\n| data | page cache | workers | folder img/s | shards img/s | shards / folder | "
          "folder CPU-ms/img | shards CPU-ms/img | folder start s | shards start s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, cache, w, got in rows:
        f, sh = got["folder"], got["shards"]
        how = "warm" if cache == "warm" else f"cold ({f[0]['cache']})"
        ratios = [b["img_s"] / a["img_s"] for a, b in zip(f, sh)]
        spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        print(f"| {name} | {how} | {w} | {_cell(f)} | {_cell(sh)} | {statistics.median(ratios):.2f}x{spread} | "
              f"{_med(f, 'cpu_ms'):.1f} | {_med(sh, 'cpu_ms'):.1f} | {_med(f, 'start_s'):.1f} | "
              f"{_med(sh, 'start_s'):.1f} |")
    for name, r in io_rows:
        print(f"| {name} | cold ({r['cache']}), file reads only, no decoding | - | {r['folder']:.0f} | "
              f"{r['shards']:.0f} | {r['shards'] / r['folder']:.1f}x | - | - | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
