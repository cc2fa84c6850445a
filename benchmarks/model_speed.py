"""fvt vs the official FasterViT, same machine, same run.

Rows: eval forward and full train step (forward, cross-entropy, backward, SGD update),
float32 and bf16 autocast, at 224 and 128 px, batch 32. Prints img/s and the ratio
fvt/official; the goal is >= 1.15x on every CPU row. The last column puts fvt's rate
against the machine's own ceiling: model FLOPs per image (torch.utils.flop_counter; a
train step counted as 3x the forward) times img/s, over the FLOP/s of a large dense matmul
in the same precision. A row near 100% is compute-bound: no implementation of the same
network can run much faster there. Needs the reference package
(pip install fastervit==1.0.0). Example:

    python benchmarks/model_speed.py --model faster_vit_0_224 --steps 5
"""

from __future__ import annotations

import argparse
import platform
import warnings

import torch


def build_official(name: str, size: int):
    from fastervit.models import faster_vit as off

    kw = {} if size == 224 else {"resolution": size}
    if size != 224:  # the reference needs windows dividing the feature maps: use fvt's choice
        from fvt.models import create_model

        kw["window_size"] = create_model(name, img_size=size).model_kwargs["window_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(off, name)(**kw)


def model_flops(model, size: int) -> int:
    """FLOPs of one image's forward, counted in eval mode: the count runs at batch 1, where
    BatchNorm in train mode refuses a 1x1 feature map (small --sizes). The mode is restored."""
    from fvt.models.commands import count_flops

    was_training = model.training
    model.eval()
    try:
        return count_flops(model, (size, size))
    finally:
        model.train(was_training)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="faster_vit_0_224")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--goal", type=float, default=1.15)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: img/s; cpu: img per CPU-second of this process (robust on a shared machine).")
    args = p.parse_args()

    from fvt.models import create_model
    from fvt.models.speed import matmul_peak, measure

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"{platform.processor() or 'CPU'}"
    print(f"# {args.model}, batch {args.batch_size}, {dev} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, clock={args.clock}")
    unit = "img/s" if args.clock == "wall" else "img/CPU-s"
    peak = {amp: matmul_peak(dev, amp) for amp in ("none", "bf16")}
    print(f"# dense matmul ceiling: fp32 {peak['none'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"| size | mode  | precision | official {unit} | fvt {unit} | fvt/official | fvt % of ceiling |")
    print(f"|------|-------|-----------|---------------:|----------:|-------------:|-----------------:|")
    worst = float("inf")
    for size in args.sizes:
        torch.manual_seed(0)
        ref = build_official(args.model, size)
        ours = create_model(args.model, img_size=size)
        ours.load_state_dict(ref.state_dict())
        flops = model_flops(ours, size)
        for mode in ("eval", "train"):
            for amp in ("none", "bf16"):
                kw = dict(batch_size=args.batch_size, amp=amp, mode=mode, steps=args.steps, warmup=args.warmup,
                          device=dev, clock=args.clock)
                a = measure(ref, (size, size), **kw)
                b = measure(ours, (size, size), channels_last=True, **kw)
                worst = min(worst, b / a)
                prec = "fp32" if amp == "none" else "bf16"
                used = b * flops * (3 if mode == "train" else 1) / peak[amp]
                share = f"{100 * used:15.0f}%" if args.clock == "wall" else f"{'-':>16}"  # peak is wall-clock
                print(f"| {size:4d} | {mode:5s} | {prec:9s} | {a:14.1f} | {b:9.1f} | {b / a:11.2f}x | {share} |",
                      flush=True)
    print(f"# worst ratio {worst:.2f}x (goal >= {args.goal:.2f}x): {'MET' if worst >= args.goal else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
