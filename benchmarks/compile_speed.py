"""torch.compile (inductor) vs eager for fvt: speed-up and compile time, eval and train step.

For each size, mode and precision: the eager model and its torch.compile'd twin (same weights,
channels_last by default) are timed interleaved over --reps repetitions of --steps steps;
compile time is the first compiled call minus a median compiled step (dynamo tracing, inductor
code generation and the C++ build, cold cache unless inductor's on-disk cache already has it).
Break-even is how many images a compiled run must process before the compile time is paid back.

    python benchmarks/compile_speed.py --sizes 224 128 --modes eval train --precisions fp32 bf16
    python benchmarks/compile_speed.py --model faster_vit_nano --sizes 32 --batch-size 2 --reps 2   # plumbing
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_speed import LAYOUTS, make_step, open_device, spread, sync  # noqa: E402


def measure(args, size: int, mode: str, prec: str, dev: torch.device) -> dict:
    from fvt.models import create_model

    torch.manual_seed(0)
    eager = create_model(args.model, img_size=size)
    compiled = create_model(args.model, img_size=size)
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()  # a fresh compile per row, not a cache hit from the last one
    steps = {"eager": make_step(eager, size, args.batch_size, prec, mode, dev, args.layout, False),
             "compiled": make_step(compiled, size, args.batch_size, prec, mode, dev, args.layout, True)}
    sync(dev)
    t = time.perf_counter()
    steps["compiled"]()
    sync(dev)
    first = time.perf_counter() - t
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    rates = {name: [] for name in steps}
    for rep in range(args.reps):
        for name in (("eager", "compiled") if rep % 2 == 0 else ("compiled", "eager")):
            sync(dev)
            t = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            sync(dev)
            rates[name].append(args.batch_size * args.steps / (time.perf_counter() - t))
    step_s = args.batch_size / statistics.median(rates["compiled"])
    return {"rates": rates, "compile_s": max(first - step_s, 0.0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="faster_vit_0_224")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    p.add_argument("--modes", nargs="+", choices=("eval", "train"), default=["eval", "train"])
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16", "fp16"), default=["fp32", "bf16"])
    p.add_argument("--layout", choices=tuple(LAYOUTS), default="channels_last")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    dev, name, load = open_device(args)
    print(f"# {args.model}, batch {args.batch_size}, {args.layout}, {dev} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, allocator={args.allocator}, {args.reps} reps x {args.steps} steps, "
          f"load average {load:.1f}")
    print("| size | mode | precision | eager img/s | compiled img/s | speed-up | compile s | break-even images |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for mode in args.modes:
            for prec in args.precisions:
                r = measure(args, size, mode, prec, dev)
                e, c = r["rates"]["eager"], r["rates"]["compiled"]
                ups = [b / a for a, b in zip(e, c)]
                gain = 1 / statistics.median(e) - 1 / statistics.median(c)  # seconds saved per image
                even = f"{r['compile_s'] / gain:.0f}" if gain > 0 else "never"
                print(f"| {size} | {mode} | {prec} | {spread(e)} | {spread(c)} | {spread(ups)}x | "
                      f"{r['compile_s']:.0f} | {even} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
