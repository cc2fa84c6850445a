"""`fvt models` (variant table, official weights, pre-fetching) and `fvt bench` (throughput on this machine).

`fvt models` reads the table shipped with fvt (fvt.models.table) and imports torch only to count a
non-default --img-size; `fvt bench` imports torch when it runs."""

from __future__ import annotations

import argparse
import fnmatch

from ..errors import UsageError
from ..runtime import tune_allocator
from .table import count_flops, model_row, shipped_table  # noqa: F401  (count_flops: kept importable here)


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="Shell-style filter on names, e.g. 'faster_vit_0*'.")
    parser.add_argument("--img-size", type=int, nargs="+", default=None, metavar="N",
                        help="Compute GFLOPs at this input size (N or H W) instead of each model's default "
                             "(counted on the spot: seconds per variant; the default sizes come from a table).")
    parser.add_argument("--download", nargs="+", metavar="NAME", default=None,
                        help="Fetch the official weights of these variants (names or patterns) into the cache and "
                             "exit: run it where there is internet, then share HF_HOME with offline machines.")


def _weights_columns(row: dict) -> tuple:
    """(published weights, official top-1, cached locally) for the table."""
    from .hub import cached

    if row["weights"] is None:
        return "-", "-", "-"
    top1 = "-" if row["top1"] is None else f"{row['top1']:.1f}"  # measured at the 224/384/... variant's size
    return row["weights"], top1, "yes" if cached("official", row["name"]) else "no"


def run_download(patterns: list) -> int:
    from .hub import published, resolve_weights

    names = []
    for pat in patterns:
        hits = [n for n in shipped_table() if fnmatch.fnmatch(n, pat)]
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
    if args.download:
        return run_download(args.download)
    names = [n for n in shipped_table() if fnmatch.fnmatch(n, args.pattern)]
    if not names:
        raise UsageError(f"no model matches '{args.pattern}'; see `fvt models`")
    print(f"{'name':<30} {'params (M)':>11} {'GFLOPs':>9} {'input':>9}  {'weights':>7} {'top-1':>5} {'cached':>6}  windows")
    for n in names:
        r = model_row(n, args.img_size)
        weights, top1, here = _weights_columns(r)
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
    parser.add_argument("--device", default="auto", help="auto or any torch device: cpu, cuda, cuda:N, mps, xpu, ...")
    parser.add_argument("--steps", type=int, default=5, help="Timed iterations per measurement.")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="Time torch.compile'd model.")
    parser.add_argument("--backend", metavar="LIST", help="Compare inference backends instead, comma-separated: "
                        "torch, compile, torch-export, aoti, onnxruntime[-legacy|-int8], openvino[-fp16|-int8], "
                        "torchscript, tensorrt, official (latency p50/p90 at batch 1, throughput at --batch-size).")


def _run_backends(args: argparse.Namespace) -> int:
    import torch

    # Lazy and one-way: exporting for the runtimes lives in the evaluation stage.
    from ..evaluation.bench import HEADER, bench_backends

    names = [b.strip() for b in args.backend.split(",") if b.strip()]
    print(f"{args.model}, batch 1 latency / batch {args.batch_size} throughput, "
          f"{torch.get_num_threads()} threads, allocator {tune_allocator()}")
    print(HEADER)
    bench_backends(args.model, names, args.img_size, args.batch_size, max(args.steps, 3), args.warmup)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..engine.devices import resolve_device
    from ..engine.precision import resolve_amp
    from .registry import create_model
    from .speed import measure

    device = resolve_device(args.device)
    if args.batch_size < 1 or args.steps < 1:
        raise UsageError("--batch-size and --steps must be >= 1")
    if args.backend:
        return _run_backends(args)
    resolve_amp(args.amp, device)  # a dtype the device lacks: one line, before any model is built
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
