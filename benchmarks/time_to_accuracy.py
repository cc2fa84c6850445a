"""Time to accuracy on ../shared/datasets/flowers, from scratch, one run after another on this machine.

    python benchmarks/time_to_accuracy.py [--budget-min 30] [--seeds 42 43] [--only a b c] [--output DIR]
    python benchmarks/time_to_accuracy.py --only cache          # epoch time with/without --cache ram
    python benchmarks/time_to_accuracy.py --only progressive    # with/without --progressive at equal wall time
    python benchmarks/time_to_accuracy.py --quick               # a tiny smoke run of every part (~10 min on 2 cores)

Runs (each the real `fvt train` command line in a subprocess; nothing else should run on the machine):
  a  the official FasterViT-0 training recipe as NVlabs/FasterViT documents it (``OFFICIAL`` below, every value
     with its source), adapted only in epochs (fvt's --time planner fits them to --budget-min) and batch (lr
     scaled linearly from the official global batch 4096);
  b  fvt's flowers recipe as shipped (the flowers recipe: 95 epochs), stopped at the budget if longer;
  c  fvt's flowers recipe with --time T --cache ram --progressive 64:96 --compile auto, one run per budget T in
     --c-budgets (default 5 10 20 30 min): its final accuracy is what a user with T minutes gets.
Validation accuracy is read against wall time from each run's log.jsonl (time zero: the command's launch);
"accuracy at T" is the best value of the run's selection metric (what best.pt holds: raw top-1 for a, the
EMA's for b and c) evaluated by T. Reported: accuracy at 5, 10, 20, 30 min and the time to reach 60% and 70%.

cache: the flowers recipe for 4 epochs without evaluation, with and without --cache ram, on the flowers folder
and on a copy of --large-n images per class re-encoded at 2048 px (benchmarks/data_speed.make_large, in a temp
dir): epoch time = median of epochs 2-4 (epoch 1 includes worker start-up and building the cache), and the peak
memory of the run's processes (PSS, shared pages split among them) sampled every 0.5 s, plus the cache's size.
progressive: the flowers recipe with --time --progressive-min and --cache ram, with and without --progressive 64:96.
Results: OUTPUT/results.json and a Markdown table on stdout (docs/train-faster.md has the skeleton).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOWERS = Path(os.environ.get("FVT_FLOWERS", REPO.parent / "shared" / "datasets" / "flowers"))
MARKS_MIN = (5, 10, 20, 30)
THRESHOLDS = (60.0, 70.0)

# The official FasterViT-0 recipe. Sources: [T] TRAINING.md of github.com/NVlabs/FasterViT (the FasterViT-0
# command), [Y] fastervit/configs/faster_vit_0_224_1k.yaml of the same repository (the config that command
# loads), [P] the defaults of fastervit/train.py in the pip package fastervit==1.0.0 (argparse, used where
# neither sets a value). Command-line values of [T] override [Y], as train.py reads the config first.
OFFICIAL = [
    "--model", "faster_vit_0_224",            # [T] --model faster_vit_0_224
    "--img-size", "224",                      # [T] --input-size 3 224 224
    "--crop-pct", "0.875",                    # [Y] crop_pct: 0.875
    "--opt", "adamw",                         # [Y] opt: adamw
    "--opt-eps", "1e-8",                      # [Y] opt_eps: 1.0e-08
    "--opt-betas", "0.9", "0.999",            # [Y] opt_betas: [0.9, 0.999]
    "--lr", "0.005",                          # [T] --lr 0.005 ...
    "--lr-base-batch", "4096",                # [T] "effective batch size ... 8*128*4 = 4096": lr scaled linearly
    "--weight-decay", "0.005",                # [T] --weight-decay 0.005 (the yaml's 0.05 is overridden)
    "--clip-grad", "5.0", "--clip-mode", "norm",  # [Y] clip_grad: 5.0, clip_mode: norm
    "--sched", "cosine",                      # [Y] sched: cosine
    "--warmup-epochs", "20",                  # [Y] warmup_epochs: 20 (of 310; --time caps it at 10% of the run)
    "--warmup-lr", "1e-6",                    # [Y] warmup_lr: 1.0e-06
    "--min-lr", "5e-6",                       # [Y] min_lr: 5.0e-06 (cooldown_epochs 10 at min_lr: not trained)
    "--drop-path-rate", "0.2",                # [T] --drop-path-rate 0.2
    "--drop-rate", "0.0",                     # [Y] drop_rate: 0.0
    "--scale", "0.08", "1.0",                 # [Y] scale: [0.08, 1.0]
    "--ratio", "0.75", "1.3333333",           # [Y] ratio: [0.75, 1.3333]
    "--hflip", "0.5", "--vflip", "0.0",       # [Y] hflip: 0.5, vflip: 0.0
    "--auto-augment", "rand-m9-mstd0.5-inc1",  # [Y] aa (timm then skips color_jitter 0.4)
    "--color-jitter", "0.4",                  # [Y] color_jitter: 0.4
    "--reprob", "0.25", "--remode", "pixel", "--recount", "1",  # [Y] reprob 0.25, remode pixel, recount 1
    "--mixup", "0.8", "--cutmix", "1.0",      # [Y] mixup: 0.8, cutmix: 1.0
    "--mixup-prob", "1.0", "--mixup-switch-prob", "0.5", "--mixup-mode", "batch",  # [Y]
    "--smoothing", "0.1",                     # [Y] smoothing: 0.1
    "--ema", "--ema-decay", "0.9998",         # [T] --model-ema, [Y] model_ema_decay: 0.9998
    "--channels-last",                        # [Y] channels_last: true
    "--amp", "auto",                          # [T] --amp (fp16 on GPUs; fvt: bf16 where it is faster)
    "--best-metric", "top1",                  # [Y] eval_metric: top1 (the raw model selects the checkpoint)
    "--eval-every", "1",                      # [P] train.py validates after every epoch
    "--batch-size", "32",                     # [T] 128 per GPU: adapted to the CPU (the lr follows, above)
    "--workers", "2",                         # [Y] workers: 8: this machine's cores
]
# Not in fvt, left out: MESA 0.1 ([T] --mesa 0.1, EMA self-distillation after 25% of training), train-time
# interpolation "random" ([Y] train_interpolation: bicubic is used), the 10 cooldown epochs ([Y]).


def recipe() -> list:
    """fvt's flowers recipe, by name (it ships inside the package)."""
    return ["--config", "flowers"]


PROGRESSIVE = "64:96"  # flowers at 96 px: faster_vit_nano has the same parameters at 64, 80 and 96 px


def c_flags(minutes: float, progressive: str = PROGRESSIVE) -> list:
    return [*recipe(), "--time", f"{minutes:g}m", "--cache", "ram", "--progressive", progressive, "--compile", "auto"]


# -- running one training ---------------------------------------------------------------------------------------
class PeakMemory(threading.Thread):
    """Peak PSS (MB) of a process and its children, sampled every 0.5 s (Linux /proc)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self.stop = pid, 0.0, threading.Event()

    def _tree(self, pid: int) -> list:
        out = [pid]
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                out += [p for c in (task / "children").read_text().split() for p in self._tree(int(c))]
            except OSError:
                pass
        return out

    def run(self):
        while not self.stop.wait(0.5):
            total = 0
            for pid in set(self._tree(self.pid)):
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
                except (OSError, ValueError):
                    pass
            self.peak_mb = max(self.peak_mb, total / 1024)


def train(label: str, flags: list, data: Path, out: Path, cap_s: float) -> dict:
    """Run `fvt train`; stop it (Ctrl-C: it saves and exits) once it passes ``cap_s`` seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fvt", "train", "--data", str(data), "--output", str(out), *map(str, flags),
           "--log-to", "none"]
    env = {**os.environ, "FVT_PROGRESS": "off",
           "PYTHONPATH": os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH")) if x)}
    print(f"[{label}] $ {' '.join(cmd)}", flush=True)
    with open(out.parent / f"{out.name}.log", "w") as log:
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        mem = PeakMemory(proc.pid)
        mem.start()
        try:
            proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait()
        mem.stop.set()
    wall = time.time() - t0
    rows = curve(out, t0)
    print(f"[{label}] exit {proc.returncode}, {wall / 60:.1f} min, {len(rows)} evaluations, "
          f"best {max((a for _, a in rows), default=float('nan')):.1f}%", flush=True)
    return {"label": label, "cmd": cmd, "exit": proc.returncode, "wall_s": wall, "curve": rows,
            "peak_pss_mb": round(mem.peak_mb), "epochs": _epoch_times(out)}


def curve(run_dir: Path, t0: float) -> list:
    """[(seconds since launch, the run's selection metric)] of every evaluated epoch, from log.jsonl."""
    try:
        events = [json.loads(line) for line in (run_dir / "log.jsonl").open()]
        import yaml

        best = (yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["best_metric"])
    except (OSError, ValueError, KeyError):
        return []
    key = {"top1": "val_top1", "ema_top1": "ema_val_top1", "top5": "val_top5"}.get(best, "val_top1")
    return [(e["time"] - t0, float(e[key])) for e in events if e.get("kind") == "epoch" and key in e]


def _epoch_times(run_dir: Path) -> list:
    try:
        return [float(json.loads(line)["epoch_time_s"]) for line in (run_dir / "log.jsonl").open()
                if '"kind": "epoch"' in line and "epoch_time_s" in line]
    except (OSError, ValueError, KeyError):
        return []


def at(rows: list, minutes: float) -> float:
    vals = [a for t, a in rows if t <= minutes * 60]
    return max(vals) if vals else float("nan")


def reach(rows: list, threshold: float) -> float:
    return next((t / 60 for t, a in rows if a >= threshold), float("nan"))


# -- the parts --------------------------------------------------------------------------------------------------
def accuracy_runs(args, data: Path, out: Path) -> list:
    results = []
    budget = args.budget_min
    cap = budget * 60 * 1.15 + 60
    for seed in args.seeds:
        s = ["--seed", str(seed), *args.extra]
        if "a" in args.only:
            results.append(train(f"a seed {seed}", [*OFFICIAL, "--time", f"{budget:g}m", *s], data,
                                 out / f"a-{seed}", cap))
        if "b" in args.only:
            results.append(train(f"b seed {seed}", [*recipe(), *args.b_extra, *s], data, out / f"b-{seed}", cap))
        if "c" in args.only:
            for t in args.c_budgets:
                results.append(train(f"c {t:g}m seed {seed}", [*c_flags(t, args.progressive), *s], data,
                                     out / f"c{t:g}-{seed}", t * 60 * 1.15 + 60))
    return results


def cache_runs(args, data: Path, out: Path) -> list:
    from data_speed import make_large  # benchmarks/data_speed.py: the 2048 px photo copy

    results = []
    with tempfile.TemporaryDirectory(prefix="fvt-2048-") as tmp:
        sets = {"flowers": data, "2048px": make_large(data, Path(tmp), args.large_n)}
        for name, folder in sets.items():
            for cache in ("none", "ram"):
                flags = [*recipe(), "--epochs", "4", "--eval-every", "1000", "--cache", cache, *args.extra]
                r = train(f"cache {cache} on {name}", flags, folder, out / f"cache-{name}-{cache}", 3600)
                log = out / f"cache-{name}-{cache}.log"
                r.update(dataset=name, cache=cache, epoch_s=statistics.median(r["epochs"][1:4]) if len(r["epochs"]) > 1
                         else float("nan"), cache_gb=_cache_gb(log), cache_build_s=_cache_build_s(log))
                results.append(r)
    return results


def _cache_gb(log: Path) -> float:
    try:
        return sum(float(line.split(" GB")[0].rsplit(", ", 1)[1]) for line in log.read_text().splitlines()
                   if line.startswith("cache: ") and " GB (" in line)
    except (OSError, ValueError, IndexError):
        return 0.0


def _cache_build_s(log: Path) -> float:
    try:
        return sum(float(line.split("ready in ")[1].rstrip("s")) for line in log.read_text().splitlines()
                   if line.startswith("cache: ready in "))
    except (OSError, ValueError, IndexError):
        return 0.0


def progressive_runs(args, data: Path, out: Path) -> list:
    results = []
    t = args.progressive_min
    for seed in args.seeds:
        base = [*recipe(), "--time", f"{t:g}m", "--cache", "ram", "--seed", str(seed), *args.extra]
        for label, extra in (("fixed size", []), (f"progressive {args.progressive}", ["--progressive", args.progressive])):
            r = train(f"{label} {t:g}m seed {seed}", [*base, *extra], data,
                      out / f"prog-{'on' if extra else 'off'}-{seed}", t * 60 * 1.15 + 60)
            r.update(variant=label, final=max((a for _, a in r["curve"]), default=float("nan")))
            results.append(r)
    return results


# -- report -----------------------------------------------------------------------------------------------------
def report(results: dict) -> str:
    lines = []
    acc = results.get("accuracy", [])
    if acc:
        lines += ["| run | " + " | ".join(f"top-1 at {m} min" for m in MARKS_MIN) + " | to 60% | to 70% | wall |",
                  "|---|" + "---:|" * (len(MARKS_MIN) + 3)]
        for r in acc:
            marks = " | ".join(f"{at(r['curve'], m):.1f}" for m in MARKS_MIN)
            to = " | ".join(f"{reach(r['curve'], th):.1f} min" for th in THRESHOLDS)
            lines.append(f"| {r['label']} | {marks} | {to} | {r['wall_s'] / 60:.1f} min |")
    if results.get("cache"):
        lines += ["", "| data | cache | epoch s (median of epochs 2-4) | cache built in s | peak PSS MB | cache GB |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['dataset']} | {r['cache']} | {r['epoch_s']:.1f} | {r['cache_build_s']:.1f} | {r['peak_pss_mb']} "
                  f"| {r['cache_gb']:.2f} |" for r in results["cache"]]
    if results.get("progressive"):
        lines += ["", "| variant | final top-1 | wall |", "|---|---:|---:|"]
        lines += [f"| {r['label']} | {r['final']:.1f} | {r['wall_s'] / 60:.1f} min |" for r in results["progressive"]]
    return "\n".join(lines)


def quick_data(src: Path, dst: Path, per_class: int = 24) -> Path:
    """A few images per class (symlinks) for the smoke run."""
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.glob("*.jpg"))[:per_class]:
            (dst / cls.name / f.name).symlink_to(f)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(FLOWERS))
    ap.add_argument("--output", default="runs/time-to-accuracy", help="run folders, logs and results.json")
    ap.add_argument("--budget-min", type=float, default=30.0, help="minutes per run of a and b")
    ap.add_argument("--c-budgets", type=float, nargs="+", default=[5, 10, 20, 30], help="--time of each c run (min)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--only", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c", "cache", "progressive"])
    ap.add_argument("--progressive-min", type=float, default=10.0, help="--time of the progressive comparison")
    ap.add_argument("--large-n", type=int, default=60, help="images per class in the 2048 px copy")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run: 24 images per class, nano at 32-64 px")
    ap.add_argument("extra", nargs="*", help="extra `fvt train` flags for every run (after --)")
    args = ap.parse_args()
    data, out = Path(args.data).resolve(), Path(args.output).resolve()
    if not data.is_dir():
        print(f"flowers not found at {data}: set FVT_FLOWERS or --data", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "benchmarks"))
    tmp = tempfile.TemporaryDirectory(prefix="fvt-quick-")
    args.progressive, args.b_extra = PROGRESSIVE, []
    if args.quick:  # the plumbing only: numbers mean nothing
        data = quick_data(data, Path(tmp.name) / "data")
        args.budget_min, args.c_budgets, args.progressive_min, args.large_n = 1.5, [1.5], 1.5, 4
        args.extra = [*args.extra, "--model", "faster_vit_nano", "--img-size", "64", "--batch-size", "8",
                      "--workers", "1"]
        args.progressive, args.b_extra = "32:64", ["--epochs", "2"]
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
               "load_average_at_start": os.getloadavg(), "quick": args.quick}
    if set(args.only) & {"a", "b", "c"}:
        results["accuracy"] = accuracy_runs(args, data, out)
    if "cache" in args.only:
        results["cache"] = cache_runs(args, data, out)
    if "progressive" in args.only:
        results["progressive"] = progressive_runs(args, data, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
