"""`fvt models` (variant table, official weights, pre-fetching) and `fvt bench` (throughput on this machine)."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import UsageError
from ..runtime import tune_allocator


def count_flops(model: torch.nn.Module, img_size: tuple) -> int:
    """FLOPs of one forward at batch 1 (torch.utils.flop_counter: a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(model.parameters()).device
    x = torch.zeros(1, 3, *img_size, device=dev)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def _cache_path() -> Path:
    root = os.environ.get("FVT_CACHE") or Path.home() / ".cache" / "fvt"
    return Path(root) / "model_table.json"


def model_row(name: str, img_size=None, use_cache: bool = True) -> dict:
    """Exact parameter count and FLOPs, computed on the meta device (no memory, no weights)
    and cached per (architecture, input size), so later `fvt models` calls take a second."""
    from .. import __version__
    from .registry import VARIANTS, build_model

    key = hashlib.sha1(repr((__version__, name, VARIANTS[name], img_size)).encode()).hexdigest()
    path = _cache_path()
    cache = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            return cache[key]

    with torch.device("meta"):
        model = build_model(name, img_size=img_size).eval()
    params = sum(p.numel() for p in model.parameters())
    h, w = model.img_size
    row = dict(name=name, params=params, flops=count_flops(model, (h, w)), input_size=[h, w],
               windows=[p.window for p in model.plans], official=model.pretrained_cfg["official"])
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cache[key] = row
            path.write_text(json.dumps(cache))
        except OSError:  # a read-only home is fine: just no cache
            pass
    return row


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="Shell-style filter on names, e.g. 'faster_vit_0*'.")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, metavar="N",
                        help="Compute GFLOPs at this input size (N or H W) instead of each model's default.")
    parser.add_argument("--download", nargs="+", metavar="NAME", default=None,
                        help="Fetch the official weights of these variants (names or patterns) into the cache and "
                             "exit: run it where there is internet, then share HF_HOME with offline machines.")


def _weights_columns(name: str) -> tuple:
    """(published weights, official top-1, cached locally) for the table."""
    from .hub import cached, published

    pub = published(name)
    if pub is None:
        return "-", "-", "-"
    top1 = "-" if name.endswith("_any_res") else f"{pub.top1:.1f}"  # measured at the 224/384/... variant's size
    return pub.pretrain, top1, "yes" if cached("official", name) else "no"


def run_download(patterns: list) -> int:
    from .hub import published, resolve_weights
    from .registry import list_models

    names = []
    for pat in patterns:
        hits = [n for n in list_models() if fnmatch.fnmatch(n, pat)]
        if not hits:
            raise UsageError(f"--download {pat}: no model matches; see `fvt models`")
        with_weights = [n for n in hits if published(n) is not None]
        if not with_weights:
            raise UsageError(f"--download {pat}: no official weights are published for {', '.join(hits)}")
        names += [n for n in with_weights if n not in names]
    done = set()
    for n in names:
        pub = published(n)
        if pub.file in done:  # the _any_res entry points share their base variant's file
            continue
        done.add(pub.file)
        path = resolve_weights("official", n)
        print(f"{n}: {pub.file} ({path.stat().st_size / 1e6:.1f} MB) -> {path}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from .registry import list_models

    if args.download:
        return run_download(args.download)
    names = [n for n in list_models() if fnmatch.fnmatch(n, args.pattern)]
    if not names:
        raise UsageError(f"no model matches '{args.pattern}'; see `fvt models`")
    print(f"{'name':<30} {'params (M)':>11} {'GFLOPs':>9} {'input':>9}  {'weights':>7} {'top-1':>5} {'cached':>6}  windows")
    for n in names:
        r = model_row(n, args.img_size)
        weights, top1, here = _weights_columns(n)
        mark = "  (fvt-only, not an official release)" if not r["official"] else ""
        print(f"{n:<30} {r['params'] / 1e6:>11.2f} {r['flops'] / 1e9:>9.2f} "
              f"{r['input_size'][0]:>4}x{r['input_size'][1]:<4}  {weights:>7} {top1:>5} {here:>6}  {r['windows']}{mark}")
    print("GFLOPs from torch.utils.flop_counter at batch 1 (a multiply-add counts as 2 FLOPs). weights: official "
          "ImageNet weights published (1k, or 21k pre-trained then 1k fine-tuned); top-1: their ImageNet-1K accuracy "
          "from the official README; cached: already on this machine (`fvt models --download NAME` fetches).")
    return 0


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="faster_vit_0_224", help="Model name (see `fvt models`).")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, metavar="N", help="N or H W.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
    parser.add_argument("--steps", type=int, default=5, help="Timed iterations per measurement.")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="Time torch.compile'd model.")
    parser.add_argument("--backend", metavar="LIST", help="Compare inference backends instead, comma-separated: "
                        "torch, compile, torch-export, aoti, onnxruntime[-legacy|-int8], openvino[-fp16|-int8], "
                        "torchscript, tensorrt, official (latency p50/p90 at batch 1, throughput at --batch-size).")


def _run_backends(args: argparse.Namespace) -> int:
    # Lazy and one-way: exporting for the runtimes lives in the evaluation stage.
    from ..evaluation.bench import HEADER, bench_backends

    names = [b.strip() for b in args.backend.split(",") if b.strip()]
    print(f"{args.model}, batch 1 latency / batch {args.batch_size} throughput, "
          f"{torch.get_num_threads()} threads, allocator {tune_allocator()}")
    print(HEADER)
    bench_backends(args.model, names, args.img_size, args.batch_size, max(args.steps, 3), args.warmup)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .registry import create_model
    from .speed import measure

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if args.batch_size < 1 or args.steps < 1:
        raise UsageError("--batch-size and --steps must be >= 1")
    if args.backend:
        return _run_backends(args)
    if args.amp == "fp16" and not device.startswith("cuda"):
        raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 on CPU")
    model = create_model(args.model, img_size=args.img_size, num_classes=1000)
    if args.compile:
        model = torch.compile(model)
    hw = tuple(getattr(model, "_orig_mod", model).img_size)
    kw = dict(batch_size=args.batch_size, amp=args.amp, steps=args.steps, warmup=args.warmup, device=device,
              channels_last=args.channels_last)
    ev = measure(model, hw, mode="eval", **kw)
    tr = measure(model, hw, mode="train", **kw)
    print(f"{args.model} {hw[0]}x{hw[1]} batch {args.batch_size} amp {args.amp} on {device} "
          f"({torch.get_num_threads()} threads, allocator {tune_allocator()}): eval {ev:.1f} img/s, "
          f"train step {tr:.1f} img/s")
    return 0
