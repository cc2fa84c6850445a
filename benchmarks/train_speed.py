"""Training throughput: end-to-end (data loading, augmentation, mixup included) beside the
model-only train step, with the engine's own code paths.

    python benchmarks/train_speed.py [--data ../shared/datasets/flowers] [--config flowers]
        [--model faster_vit_nano] [--img-size 128] [--batch-size 64] [--workers 2] [--steps 10] [--amp bf16]

End-to-end time runs the real epoch loop (fvt.engine.steps.train_one_epoch) and measures between
optimizer steps after a warm-up; model-only repeats forward/loss/backward/step on one batch already
in memory. When end-to-end is well below model-only, the loader is what training waits for.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fvt.config import Config  # noqa: E402
from fvt.config.recipes import resolve_config_file  # noqa: E402
from fvt.data import build_data  # noqa: E402
from fvt.data.loaders import build_mixup, build_train_loader  # noqa: E402
from fvt.engine.evaluate import autocast_context  # noqa: E402
from fvt.engine.optim import build_optimizer  # noqa: E402
from fvt.engine.steps import StepParts, TrainState, train_one_epoch  # noqa: E402
from fvt.engine.precision import resolve_amp  # noqa: E402
from fvt.models import create_model  # noqa: E402
from fvt.runtime import tune_allocator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FVT_FLOWERS", str(REPO.parent / "shared" / "datasets" / "flowers")))
    ap.add_argument("--config", default=None, help="take model/aug/batch settings from a recipe (e.g. flowers) or a config file")
    ap.add_argument("--model", default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--amp", default=None, choices=("none", "bf16", "fp16"))
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps (after 3 warm-up steps)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    allocator = tune_allocator()  # as `fvt train` does; FVT_MALLOC=system measures glibc's defaults
    if not Path(a.data).is_dir():
        print(f"data folder not found: {a.data} (pass --data or set FVT_FLOWERS)", file=sys.stderr)
        return 2
    cfg = Config.from_yaml(resolve_config_file(a.config)) if a.config else Config()
    cfg.set("data", a.data)
    for key, val in (("model", a.model), ("img_size", a.img_size), ("batch_size", a.batch_size),
                     ("workers", a.workers), ("amp", a.amp)):
        if val is not None:
            cfg.set(key, val)
    if cfg.model.img_size is None:
        cfg.set("img_size", 128)
    cfg.train.ema = False
    warm = 3
    cfg.train.max_steps, cfg.train.log_every = warm + a.steps, 0
    device = torch.device(a.device)
    amp_dtype = resolve_amp(cfg.train.amp, device)

    with tempfile.TemporaryDirectory() as tmp:
        data = build_data(cfg, tmp)
        loader = build_train_loader(data, cfg)
        if len(loader) < warm + a.steps:
            print(f"only {len(loader)} batches per epoch; use fewer --steps", file=sys.stderr)
            return 2
        torch.manual_seed(0)
        model = create_model(cfg.model.model, num_classes=len(data.classes), img_size=list(data.preprocessing.input_size))
        model.to(device)
        if cfg.model.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, cfg, cfg.optim.lr)
        mixup = build_mixup(cfg.aug, len(data.classes))
        from timm.loss import SoftTargetCrossEntropy

        crit = SoftTargetCrossEntropy() if mixup is not None else torch.nn.CrossEntropyLoss()
        mean = torch.tensor(data.preprocessing.mean).view(1, -1, 1, 1)
        parts = StepParts(model, model, opt, None, None, None, crit, mixup, None, [], device, amp_dtype, cfg, mean, mean)
        stamps = []
        loader.train_sampler.set_epoch(0)
        train_one_epoch(parts, loader, TrainState(), lambda: stamps.append(time.perf_counter()), lambda r: None, False)
        bs = cfg.data.batch_size
        e2e = bs * (len(stamps) - warm) / (stamps[-1] - stamps[warm - 1])

        # model-only: one batch from the same pipeline, kept in memory
        images, targets = next(iter(loader))[:2]
        images, targets = images.to(device), targets.to(device)
        if cfg.model.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None:
            images, targets = mixup(images, targets)
        model.train()
        times = []
        for i in range(warm + a.steps):
            t0 = time.perf_counter()
            with autocast_context(device, amp_dtype):
                loss = crit(model(images).float(), targets)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        model_only = bs * a.steps / sum(times[warm:])

    h, w = data.preprocessing.input_size
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}, allocator {allocator}")
    print(f"{cfg.model.model} {h}x{w}, batch {bs}, amp {cfg.train.amp}, workers {cfg.data.workers}, "
          f"auto_augment {cfg.aug.auto_augment}, mixup {cfg.aug.mixup}")
    print("| measurement | img/s |\n|---|---|")
    print(f"| end-to-end train (data loading included) | {e2e:.1f} |")
    print(f"| model-only train step | {model_only:.1f} |")
    print(f"| end-to-end / model-only | {e2e / model_only:.2f} |")
    assert math.isfinite(e2e) and math.isfinite(model_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
