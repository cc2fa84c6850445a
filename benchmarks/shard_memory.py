"""Peak memory while streaming shards: flat in the dataset size (issue 16).

    python benchmarks/shard_memory.py [--sizes 10000 100000] [--workers 2] [--keep]

Writes synthetic shards in ``fvt data shard``'s format (tiny 16x16 JPEGs, 5 classes, 10,000 per
shard; written directly with webdataset's TarWriter, so no 100k-file folder is needed) into
/tmp, then for each size streams one full training epoch (fvt's training transform at 32 px without RandAugment,
batch 256) in a fresh process and reports the peak RSS of the main process and of the largest
DataLoader worker (``getrusage`` ru_maxrss). Memory should not grow with the number of images:
each worker holds its shuffle buffer (--shuffle-buffer samples) and one shard stream.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PER_SHARD = 10_000


def make_shards(dst: Path, n: int) -> Path:
    import numpy as np
    import webdataset as wds
    from PIL import Image

    from fvt.data.shards import FORMAT, SHARD_MTIME, VERSION

    if (dst / "index.json").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    classes = [f"class_{i}" for i in range(5)]
    rng = np.random.default_rng(0)
    blobs = []
    for k in range(64):  # 64 distinct tiny JPEGs, reused: decoding cost is what matters, not variety
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    shards = []
    for s in range(0, n, PER_SHARD):
        name = f"train-{s // PER_SHARD:06d}.tar"
        count, per = min(PER_SHARD, n - s), [0] * 5
        with open(dst / name, "wb") as f, wds.TarWriter(f, mtime=SHARD_MTIME) as w:
            for i in range(s, s + count):
                w.write({"__key__": f"{i:08d}", "jpg": blobs[i % 64], "cls": str(i % 5), "path.txt": f"{i}.jpg"})
                per[i % 5] += 1
        shards.append({"name": name, "count": count, "bytes": (dst / name).stat().st_size,
                       "counts": dict(zip(classes, per))})
    counts = {c: sum(sh["counts"][c] for sh in shards) for c in classes}
    index = {"format": FORMAT, "version": VERSION, "classes": classes,
             "splits": {"train": {"count": n, "counts": counts, "shards": shards}}}
    (dst / "index.json").write_text(json.dumps(index))
    return dst


def child(data: str, workers: int, buffer: int) -> None:
    """One epoch; prints a JSON line with the peak RSS of this process and of its largest worker."""
    from fvt.config import Config
    from fvt.data import build_data, build_train_loader

    cfg = Config()
    cfg.data.data, cfg.model.img_size, cfg.data.workers, cfg.data.batch_size = data, [32], workers, 256
    cfg.data.shuffle_buffer = buffer
    cfg.set("auto_augment", "none")  # memory, not augmentation cost, is measured here: keep the run short
    cfg.set("reprob", 0.0)
    bundle = build_data(cfg, None)
    loader = build_train_loader(bundle, cfg, seed=0)
    loader.train_sampler.set_epoch(0)
    t = time.perf_counter()
    n = sum(len(b[0]) for b in loader if b is not None)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"images": n, "seconds": time.perf_counter() - t, "main_mb": me.ru_maxrss / 1024,
                      "worker_mb": kids.ru_maxrss / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shuffle-buffer", type=int, default=1000)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/fvt_shard_memory"))
    ap.add_argument("--keep", action="store_true", help="keep the generated shards")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    print("| images | shards | workers | shuffle buffer | main peak RSS (MB) | largest worker peak RSS (MB) | s |")
    print("|---|---|---|---|---|---|---|")
    try:
        for n in args.sizes:
            data = make_shards(args.work_dir / f"n{n}", n)
            out = subprocess.run([sys.executable, __file__, "--child", str(data), str(args.workers),
                                  str(args.shuffle_buffer)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {r['images']} | {-(-n // PER_SHARD)} | {args.workers} | {args.shuffle_buffer} | "
                  f"{r['main_mb']:.0f} | {r['worker_mb']:.0f} | {r['seconds']:.0f} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
