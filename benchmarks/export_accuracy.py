"""Top-1 and speed of a trained checkpoint against its exports: the export table.

    python benchmarks/export_accuracy.py --checkpoint RUN/best.pt [--data VAL_DIR] [--calib-data DIR]
        [--formats onnx,onnx-legacy,onnx-int8,...|all] [--speed] [--output DIR]
    python benchmarks/export_accuracy.py --quick      # smoke run: tiny random model, synthetic images

Train-free: it exports the checkpoint in each format with the real `fvt export` command line
(calibrating int8 on --calib-data, default the same images as --data / the run's validation
split), scores the checkpoint and every export with `fvt eval` on the same images, and prints one
table (top-1, difference to PyTorch float, backend, ONNX exporter, export check) plus a JSON copy.
With --speed it also times every file as fvt runs it (the same loader as fvt eval/predict), in this
process: p50 latency at batch 1 and throughput at --speed-batch, on random inputs of the model's size.
Relative paths are taken from the current folder. Exit 1 if an int8 export loses more than
--max-drop points (default 1.0), or an export is refused by its own check.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {  # name -> (fvt export flags, file suffix)
    "onnx": (["--format", "onnx"], ".onnx"),
    "onnx-legacy": (["--format", "onnx", "--onnx-exporter", "legacy"], ".onnx"),
    "onnx-fp16": (["--format", "onnx", "--half"], ".onnx"),
    "onnx-int8": (["--format", "onnx", "--int8", "static"], ".onnx"),
    "onnx-int8-dynamic": (["--format", "onnx", "--int8", "dynamic"], ".onnx"),
    "openvino": (["--format", "openvino"], ".xml"),
    "openvino-fp16": (["--format", "openvino", "--half"], ".xml"),
    "openvino-int8": (["--format", "openvino", "--int8"], ".xml"),
    "torch-export": (["--format", "torch-export"], ".pt2"),
    "aoti": (["--format", "aoti"], ".pt2"),
    "torchscript": (["--format", "torchscript"], ".pt"),
}
DEFAULT = "onnx,onnx-legacy,onnx-int8,onnx-int8-dynamic,openvino,openvino-fp16,openvino-int8,torch-export,aoti,torchscript"


def _fvt(*args: str, check: bool = True) -> int:
    cmd = [sys.executable, "-m", "fvt", *args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=check).returncode


def _eval(artifact: Path, data, out: Path, workers: int) -> dict:
    _fvt("eval", "--checkpoint", str(artifact), "--output", str(out), "--workers", str(workers),
         *(["--data", str(data)] if data else []))
    return json.loads((out / "metrics.json").read_text())


def _val_split_folder(ckpt: Path, folder: Path) -> Path:
    """The run's validation split (split.json beside the checkpoint) as class folders of symlinks: an export
    carries no training config, so its `fvt eval` needs the images named (../shared is only read)."""
    split = ckpt.parent / "split.json"
    if not split.is_file():
        sys.exit(f"{ckpt}: no split.json beside it; pass --data VAL_DIR")
    record = json.loads(split.read_text())
    root = Path(record["data"])
    for rel, label in record["val"]:
        link = folder / label / Path(rel).name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root / rel)
    return folder


def _speed(artifact: Path, batch: int, steps: int) -> dict:
    """Latency / throughput of the file as fvt eval / predict run it (PyTorch files: eager, fp32)."""
    import torch

    from fvt.evaluation.loading import load_any
    from fvt.models.speed import latency_throughput

    loaded = load_any(artifact, device="cpu")
    h, w = loaded.preprocessing["input_size"]
    chans = len(loaded.preprocessing.get("mean") or (0, 0, 0))
    fn = torch.inference_mode()(loaded.model)
    return latency_throughput(fn, lambda n: torch.randn(n, chans, int(h), int(w)), batch, steps, max(2, steps // 5))


def _quick_checkpoint(root: Path) -> tuple:
    """A tiny random faster_vit_nano checkpoint at 32 px and 12 synthetic images (the tests' fixtures)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from eval_fixtures import make_checkpoint, make_folder

    data = make_folder(root / "data", per_class=4)
    return make_checkpoint(root / "run" / "best.pt", data, seed=0), data


def _table(rows, base, data, ckpt, speed: bool) -> None:
    print(f"\n{ckpt} on {data or 'the run validation split'} ({base['num_samples']} images), "
          f"{platform.processor() or platform.machine()}")
    head = f"{'format':<20} {'backend':<13} {'exporter':<8} {'top1 %':>8} {'vs float':>9}"
    print(head + (f" {'p50 ms':>8} {'img/s':>8}" if speed else ""))
    for r in rows:
        if r["top1"] is None:
            print(f"{r['format']:<20} {'-':<13} {'-':<8} {'-':>8} {'-':>9}  refused by its export check")
            continue
        line = (f"{r['format']:<20} {r['backend'] or '':<13} {r.get('exporter') or '':<8} {r['top1']:>8.2f} "
                f"{r['top1'] - base['top1']:>+9.2f}")
        if speed and "p50_ms" in r:
            line += f" {r['p50_ms']:>8.2f} {r['img_per_s']:>8.1f}"
        print(line + ("  > limit" if r.get("over_limit") else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, help="Evaluation images (class folders). Default: the run's val split "
                    "(split.json beside the checkpoint, linked under OUTPUT/val-split).")
    ap.add_argument("--calib-data", type=Path, help="Calibration images for int8. Default: --data / the val split.")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--formats", default=DEFAULT, help=f"Comma-separated, or all. [default: {DEFAULT}]")
    ap.add_argument("--speed", action="store_true", help="Also time every file (p50 at batch 1, img/s at a batch).")
    ap.add_argument("--speed-batch", type=int, default=32)
    ap.add_argument("--speed-steps", type=int, default=20)
    ap.add_argument("--output", type=Path, default=Path("export-accuracy"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-drop", type=float, default=1.0, help="Largest allowed int8 top-1 drop in points.")
    ap.add_argument("--quick", action="store_true", help="Smoke run on a tiny random model (no --checkpoint).")
    args = ap.parse_args()
    names = list(VARIANTS) if args.formats == "all" else [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown format {unknown[0]}; choose from {', '.join(VARIANTS)}")
    if args.quick:
        root = Path(tempfile.mkdtemp(prefix="fvt-export-quick-"))
        args.checkpoint, args.data = _quick_checkpoint(root)
        args.output, args.calib_images, args.speed_batch, args.speed_steps = root / "out", 12, 4, 3
        args.workers, args.speed = 0, True
    if args.checkpoint is None:
        ap.error("--checkpoint is required (or --quick)")
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint.resolve()
    data = args.data.resolve() if args.data else _val_split_folder(ckpt, out / "val-split")
    calib = (args.calib_data or args.data)
    base = _eval(ckpt, data, out / "eval-pytorch", args.workers)
    rows = [{"format": "pytorch", "top1": base["top1"], "backend": base.get("backend", "pytorch")}]
    if args.speed:
        rows[0].update(_speed(ckpt, args.speed_batch, args.speed_steps))
    for name in names:
        flags, suffix = VARIANTS[name]
        artifact = out / f"{name}{suffix}"
        code = _fvt("export", "--checkpoint", str(ckpt), "--output", str(artifact), *flags, "--workers",
                    str(args.workers), "--check-images", str(args.calib_images),
                    *(["--data", str(calib.resolve())] if calib else []), check=False)
        if code != 0:  # the export's own check refused it (e.g. poor top-1 agreement): no file to score
            rows.append({"format": name, "top1": None, "backend": None, "refused_by_export_check": True})
            continue
        m = _eval(artifact, data, out / f"eval-{name}", args.workers)
        record = json.loads((out / f"{artifact.name}.verify.json").read_text())
        rows.append({"format": name, "top1": m["top1"], "backend": m.get("backend"), "exporter": record.get("exporter"),
                     "check_top1_agreement": record.get("top1_agreement"),
                     "check_max_abs_prob_diff": record.get("max_abs_prob_diff")})
        if args.speed:
            rows[-1].update(_speed(artifact, args.speed_batch, args.speed_steps))
    failed = any(r["top1"] is None for r in rows)
    for r in rows:
        if r["top1"] is not None:
            r["drop"] = base["top1"] - r["top1"]
            r["over_limit"] = "int8" in r["format"] and r["drop"] > args.max_drop
            failed |= r["over_limit"]
    _table(rows, base, data, ckpt, args.speed)
    (out / "export_accuracy.json").write_text(json.dumps({"checkpoint": str(ckpt), "rows": rows}, indent=2))
    print(f"wrote {out / 'export_accuracy.json'}")
    return 0 if args.quick else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
