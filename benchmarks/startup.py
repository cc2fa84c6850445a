"""Start-up cost of the `fvt` command: wall time and peak memory of fresh processes.

Each repetition starts one new process per command, in a rotating order (so all commands see the same
machine load), and waits for it: the wall time is what a user waits, the peak RSS is the child's
``ru_maxrss`` (os.wait4). A row reports the median over --reps repetitions and its spread (min-max).
One untimed warm-up round runs first (file caches filled, as on a machine where fvt was used before);
--no-warmup measures the very first start as well.

Commands: ``fvt --help``, ``fvt train --help``, ``fvt models``, ``fvt predict`` of one image with a
checkpoint of --model (made once, untimed, by a one-step ``fvt train`` on a generated folder).
The goal of the --help rows: <= 0.5 s and <= 100 MB on the 2-core dev machine.

    python benchmarks/startup.py                       # 5 repetitions, faster_vit_0_224 for predict
    python benchmarks/startup.py --installed           # the `fvt` console script on PATH instead of python -m fvt
    python benchmarks/startup.py --quick               # smoke test: 1 repetition, no warm-up, tiny model
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S, GOAL_MB = 0.5, 100.0


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), FVT_PROGRESS="off")


def run_once(cmd: list, cwd: Path) -> tuple:
    """(wall seconds, peak RSS in MB, exit code) of one fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, proc.returncode  # ru_maxrss is in KiB on Linux


# generates the folder in a child process: this parent stays small (a forked child's peak RSS counts
# the parent's pages it started from, so numpy/PIL imported here would inflate every row)
_FOLDER = """
import sys, numpy as np
from pathlib import Path
from PIL import Image
root, size = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for c in range(2):
    (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"class_{c}" / f"{i}.png")
"""


def make_checkpoint(fvt: list, work: Path, model: str, img_size: int) -> tuple:
    """(checkpoint, image): a one-step training run on a generated two-class folder."""
    subprocess.run([sys.executable, "-c", _FOLDER, str(work / "photos"), str(img_size + 8)], check=True)
    cmd = [*fvt, "train", "--data", "photos", "--output", "run", "--model", model, "--img-size", str(img_size),
           "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--amp", "none",
           "--auto-augment", "none", "--ema", "--no-compile"]
    subprocess.run(cmd, cwd=work, env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return work / "run" / "last.pt", work / "photos" / "class_0" / "0.png"


def machine() -> str:
    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {version('torch')}, "
            f"timm {version('timm')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="Processes per command [default: 5].")
    ap.add_argument("--model", default="faster_vit_0_224", help="Model of the predict checkpoint.")
    ap.add_argument("--img-size", type=int, default=None, help="Its input size [default: the model's own].")
    ap.add_argument("--installed", action="store_true", help="Time the `fvt` console script on PATH.")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="Time the very first start too.")
    ap.add_argument("--json", metavar="FILE", help="Also write the rows as JSON.")
    ap.add_argument("--quick", action="store_true", help="Smoke test: 1 repetition, no warm-up, faster_vit_nano at 32 px.")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.warmup, args.model, args.img_size = 1, False, "faster_vit_nano", 32
    if args.installed and not shutil.which("fvt"):
        raise SystemExit("--installed: no `fvt` on PATH")
    fvt = ["fvt"] if args.installed else [sys.executable, "-m", "fvt"]
    size = args.img_size or (128 if "nano" in args.model or "micro" in args.model else 224)

    with tempfile.TemporaryDirectory(prefix="fvt-startup-") as tmp:
        work = Path(tmp)
        ckpt, image = make_checkpoint(fvt, work, args.model, size)
        commands = {"fvt --help": ["--help"], "fvt train --help": ["train", "--help"], "fvt models": ["models"],
                    f"fvt predict (1 image, {args.model})": ["predict", "--checkpoint", str(ckpt), str(image)]}
        names = list(commands)
        if args.warmup:
            for name in names:
                run_once([*fvt, *commands[name]], work)
        times = {n: [] for n in names}
        rss = {n: [] for n in names}
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate the order
                wall, peak, _ = run_once([*fvt, *commands[name]], work)
                times[name].append(wall)
                rss[name].append(peak)

    print(f"fvt start-up, {args.reps} fresh process(es) per command{' after a warm-up round' if args.warmup else ''}"
          f" ({'fvt console script' if args.installed else 'python -m fvt'}); {machine()}")
    print(f"{'command':<42} {'median s':>9} {'min-max s':>13} {'peak RSS MB':>12} {'min-max MB':>13}")
    rows = []
    for name in names:
        t, m = times[name], rss[name]
        goal = ""
        if name.endswith("--help"):
            met = max(t) <= GOAL_S and max(m) <= GOAL_MB
            goal = f"  goal <= {GOAL_S} s, {GOAL_MB:.0f} MB: {'met' if met else 'not met'}"
        print(f"{name:<42} {statistics.median(t):>9.2f} {min(t):>6.2f}-{max(t):<6.2f} {statistics.median(m):>12.0f} "
              f"{min(m):>6.0f}-{max(m):<6.0f}{goal}")
        rows.append(dict(command=name, seconds=t, peak_rss_mb=m))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
