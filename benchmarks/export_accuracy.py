"""Top-1 of a trained checkpoint against its exports: does int8 stay within 1 point of float?

    python benchmarks/export_accuracy.py --checkpoint RUN/best.pt [--data VAL_DIR] [--calib-data DIR]
        [--formats onnx,onnx-int8,onnx-int8-dynamic,openvino,openvino-int8] [--output DIR]

Train-free: it exports the checkpoint in each format with the real `fvt export` command line
(calibrating int8 on --calib-data, default the same images as --data / the run's validation
split), then scores the checkpoint and every export with `fvt eval` on the same images, and
prints one table (top-1, difference to PyTorch float, backend, export check) plus a JSON copy.
Relative paths are taken from the current folder. Exit 1 if an int8 export loses more than
--max-drop points (default 1.0).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

VARIANTS = {  # name -> (fvt export flags, file suffix)
    "onnx": (["--format", "onnx"], ".onnx"),
    "onnx-fp16": (["--format", "onnx", "--half"], ".onnx"),
    "onnx-int8": (["--format", "onnx", "--int8", "static"], ".onnx"),
    "onnx-int8-dynamic": (["--format", "onnx", "--int8", "dynamic"], ".onnx"),
    "openvino": (["--format", "openvino"], ".xml"),
    "openvino-fp16": (["--format", "openvino", "--half"], ".xml"),
    "openvino-int8": (["--format", "openvino", "--int8"], ".xml"),
}


def _fvt(*args: str, check: bool = True) -> int:
    cmd = [sys.executable, "-m", "fvt", *args]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=check).returncode


def _eval(artifact: Path, data, out: Path, workers: int) -> dict:
    _fvt("eval", "--checkpoint", str(artifact), "--output", str(out), "--workers", str(workers),
         *(["--data", str(data)] if data else []))
    return json.loads((out / "metrics.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--data", type=Path, help="Evaluation images (class folders). Default: the run's val split.")
    ap.add_argument("--calib-data", type=Path, help="Calibration images for int8. Default: --data / the val split.")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--formats", default="onnx,onnx-int8,onnx-int8-dynamic,openvino,openvino-int8")
    ap.add_argument("--output", type=Path, default=Path("export-accuracy"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-drop", type=float, default=1.0, help="Largest allowed int8 top-1 drop in points.")
    args = ap.parse_args()
    names = [n.strip() for n in args.formats.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown format {unknown[0]}; choose from {', '.join(VARIANTS)}")
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint.resolve()
    data = args.data.resolve() if args.data else None
    calib = (args.calib_data or args.data)
    base = _eval(ckpt, data, out / "eval-pytorch", args.workers)
    rows = [{"format": "pytorch", "top1": base["top1"], "backend": base.get("backend", "pytorch")}]
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
        check = json.loads((out / f"{name}.verify.json").read_text())
        rows.append({"format": name, "top1": m["top1"], "backend": m.get("backend"),
                     "check_top1_agreement": check.get("top1_agreement"),
                     "check_max_abs_prob_diff": check.get("max_abs_prob_diff")})
    failed = False
    print(f"\n{ckpt} on {data or 'the run validation split'} ({base['num_samples']} images), {platform.processor() or platform.machine()}")
    print(f"{'format':<20} {'backend':<12} {'top1 %':>8} {'vs float':>9}")
    for r in rows:
        if r["top1"] is None:
            failed = True
            print(f"{r['format']:<20} {'-':<12} {'-':>8} {'-':>9}  refused by its export check")
            continue
        r["drop"] = base["top1"] - r["top1"]
        bad = "int8" in r["format"] and r["drop"] > args.max_drop
        failed |= bad
        print(f"{r['format']:<20} {r['backend'] or '':<12} {r['top1']:>8.2f} {r['top1'] - base['top1']:>+9.2f}" + ("  > limit" if bad else ""))
    (out / "export_accuracy.json").write_text(json.dumps({"checkpoint": str(ckpt), "rows": rows}, indent=2))
    print(f"wrote {out / 'export_accuracy.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
