"""Train-pipeline throughput (images/s) beside the model's bf16 train-step throughput.

    python benchmarks/data_speed.py [--data DIR] [--sizes 224 128] [--workers 0 1 2]
    python benchmarks/data_speed.py --shards [--data DIR] [--synthetic 50000] [--workers 1 2]

``--shards``: image folder vs WebDataset shards (``fvt data shard``) through the same training
pipeline, 1 and 2 workers, warm and cold page cache, on --data and on a generated set of
--synthetic 256 px JPEGs: img/s and CPU-seconds per image (see ``shard_rows``).

Measures fvt's training loader (decode + RandAugment + random erasing + collate, exactly
what ``fvt train`` uses) on the flowers folder (small 128 px JPEGs) and on large photos made
from them (re-encoded at 2048 px, as phone photos are; cached in --large-dir), with and
without JPEG draft decoding, then one FasterViT bf16 train step per input size. Goal: loader
img/s >= 2x the model's train-step img/s with 1 worker, leaving the model the other cores.
Every number is one timed epoch after a warm-up epoch; other processes on the machine lower it.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fvt.config import Config  # noqa: E402
from fvt.data import build_data, build_train_loader  # noqa: E402

FLOWERS = Path(os.environ.get("FVT_FLOWERS", ROOT.parent / "shared" / "datasets" / "flowers"))


def make_large(src: Path, dst: Path, n: int, long_side: int = 2048) -> Path:
    """Re-encode ``n`` images per class from ``src`` at ``long_side`` px (JPEG q90), once."""
    from PIL import Image

    for cls in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out = dst / cls.name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.glob("*.jpg"))[:n]:
            target = out / f.name
            if not target.exists():
                im = Image.open(f).convert("RGB")
                scale = long_side / max(im.size)
                im.resize((round(im.size[0] * scale * 4 / 3), round(im.size[1] * scale)), Image.BICUBIC).save(
                    target, quality=90)
    return dst


def loader_speed(data: Path, size: int, workers: int, images: int, batch: int, draft: bool = True) -> float:
    cfg = Config()
    cfg.data.data, cfg.model.img_size = str(data), [size]
    cfg.data.val_split, cfg.data.workers, cfg.data.batch_size = 0.0, workers, batch
    bundle = build_data(cfg, None)
    ds = bundle.train
    ds.samples = (ds.samples * (images // len(ds.samples) + 1))[:images]
    if not draft:
        ds.min_decode_size = None
    loader = build_train_loader(ds, cfg, seed=0)
    for epoch in range(2):  # epoch 0 warms up (worker start, file cache)
        loader.train_sampler.set_epoch(epoch)
        t = time.perf_counter()
        n = sum(len(b[0]) for b in loader if b is not None)
        dt = time.perf_counter() - t
    del loader
    return n / dt


def model_speed(name: str, size: int, batch: int, steps: int = 2) -> tuple:
    try:
        from fvt.models import create_model

        model, label = create_model(name, num_classes=5, img_size=size), name
    except Exception as e:  # noqa: BLE001 - fall back to a timm model, and say so
        import timm

        print(f"(fvt model {name} unavailable: {e}; using timm resnet18)")
        model, label = timm.create_model("resnet18", num_classes=5), "resnet18 (timm)"
    model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (batch,))
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return batch / (sum(times) / len(times)), label


def main() -> int:
    if "--shards" in sys.argv[1:]:
        from shard_speed import main as shard_main  # folder vs shards: its own flags

        return shard_main([a for a in sys.argv[1:] if a != "--shards"])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=FLOWERS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--images", type=int, default=640, help="images per timed epoch (small JPEGs)")
    ap.add_argument("--large-images", type=int, default=192, help="images per timed epoch (2048 px photos)")
    ap.add_argument("--large-dir", type=Path, default=Path(tempfile.gettempdir()) / "fvt_flowers_2048")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--model", default="faster_vit_0_224")
    ap.add_argument("--model-batch", type=int, default=32, help="batch of the timed model train step")
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args()
    logging.getLogger("fvt.data").setLevel(logging.ERROR)  # the flowers' duplicate warning, once per loader
    if not args.data.is_dir():
        print(f"data folder not found: {args.data} (pass --data or set FVT_FLOWERS)")
        return 1
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    large = make_large(args.data, args.large_dir, max(1, args.large_images // 5))
    rows = []
    for size in args.sizes:  # loaders first, the (slow) model step last
        for w in args.workers:
            small = loader_speed(args.data, size, w, args.images, args.batch_size)
            big = loader_speed(large, size, w, args.large_images, args.batch_size)
            # the full-resolution decode, for comparison: once per size (it is slow)
            nodraft = (loader_speed(large, size, w, args.large_images, args.batch_size, draft=False)
                       if w == args.workers[min(1, len(args.workers) - 1)] else float("nan"))
            rows.append([size, w, small, big, nodraft])
            print(f"{size}px, {w} workers: flowers {small:.0f} img/s, 2048px photos {big:.0f} img/s "
                  f"(full decode {nodraft:.0f})", flush=True)
    models = {}
    for size in args.sizes:
        models[size] = model_speed(args.model, size, args.model_batch) if not args.no_model else (float("nan"), "-")
        print(f"{size}px: {models[size][1]} bf16 train step {models[size][0]:.1f} img/s", flush=True)
    rows = [r + list(models[r[0]]) for r in rows]
    print("\n| input | workers | flowers 128 px JPEG | 2048 px photos | 2048 px, no draft | model train step (bf16) |"
          " loader / model (2048 px) |")
    print("|---|---|---|---|---|---|---|")
    for size, w, small, big, nodraft, m, label in rows:
        nd = "-" if nodraft != nodraft else f"{nodraft:.0f}"
        print(f"| {size} | {w} | {small:.0f} | {big:.0f} | {nd} | {m:.1f} ({label}) | {big / m:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
