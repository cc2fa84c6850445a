"""``fvt eval``, ``fvt predict``, ``fvt export`` and ``fvt demo``: flags and entry points."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from .outputs import check_output


# -- shared flags ------------------------------------------------------------------------
CHECKPOINT_HELP = ("fvt checkpoint (RUN/best.pt), safetensors export, timm folder, or an exported "
                   "MODEL.onnx / .xml (OpenVINO) / .engine (TensorRT) / .mlpackage / TorchScript .pt; "
                   "an official .pth.tar with --model.")


def add_checkpoint_arguments(p, what: str = "Use") -> None:
    p.add_argument("--checkpoint", "--pretrained", required=True, metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument("--model", metavar="NAME", help="Model name for an official checkpoint (labelled with ImageNet names).")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--ema", dest="ema", action="store_const", const=True, default=None,
                   help=f"{what} the EMA weights. Default: the weights the run selected best.pt by.")
    w.add_argument("--raw", dest="ema", action="store_const", const=False, help=f"{what} the raw (non-EMA) weights.")


def add_runtime_arguments(p, batch_default: Optional[int] = 32) -> None:
    """The flags every command that runs a model shares."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N. [default: auto]")
    p.add_argument("--batch-size", type=int, default=batch_default, metavar="N",
                   help="Images per forward pass." + (f" [default: {batch_default}]" if batch_default else
                                                     " Default: the run's eval batch size, else 64."))
    p.add_argument("--workers", type=int, default=2, metavar="N", help="DataLoader processes decoding images. [default: 2]")
    p.add_argument("--amp", choices=("none", "auto", "bf16", "fp16"), default="none",
                   help="Autocast precision for PyTorch weights (none, auto, bf16, fp16). [default: none]")
    p.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model before running it.")


def check_runtime_arguments(args) -> None:
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers}: must be 0 or more")


def prepare(loaded, args):
    """Autocast dtype for ``--amp`` and the compiled model for ``--compile`` (PyTorch weights only)."""
    from ..engine.precision import resolve_amp

    if not loaded.is_torch:
        if args.amp != "none" or args.compile:
            print(f"fvt: warning: --amp/--compile apply to PyTorch weights; {loaded.backend} runs the export "
                  f"as it was built", file=sys.stderr)
        return None
    if args.compile:
        import torch

        loaded.model = torch.compile(loaded.model)
    return resolve_amp(args.amp, loaded.device)


def describe_weights(loaded) -> str:
    if not loaded.is_torch:
        return f"{loaded.kind} export ({loaded.info.get('precision', 'fp32')}) on {loaded.backend}"
    why = loaded.info.get("weights_why")
    return f"{loaded.info.get('weights', 'raw')} weights" + (f" ({why})" if why else "") + " on PyTorch"


# -- eval ------------------------------------------------------------------------------
def add_eval_arguments(p) -> None:
    add_checkpoint_arguments(p, "Evaluate")
    p.add_argument("--data", metavar="DIR", help="Folder of class folders, a pre-split root (its val folder is used) "
                   "or a CSV of path,label. Default: the run's own validation split.")
    p.add_argument("--output", metavar="DIR", help="Where metrics, figures and report.html go. Default: RUN/eval.")
    p.add_argument("--ood", metavar="DIR", help="A folder of foreign images (not of any class): how well the model tells "
                   "them from the evaluation images (AUROC, FPR at 95%% TPR; max softmax probability and energy scores).")
    p.add_argument("--no-explain", dest="explain", action="store_false",
                   help="Skip the Grad-CAM heat maps of the report's mistakes and examples (they need the [explain] extra).")
    add_runtime_arguments(p, batch_default=None)


def run_eval(args) -> int:
    from .evaluate import evaluate_checkpoint

    check_runtime_arguments(args)
    if args.output:
        check_output(args.output, "dir")
    if args.ood is not None and not Path(args.ood).is_dir():
        raise UsageError(f"--ood {args.ood}: no such folder (give a folder of foreign images)")
    rec = evaluate_checkpoint(args.checkpoint, args.data, args.output, args.ema, args.batch_size, args.device,
                              workers=args.workers, model_name=args.model, amp=args.amp, compile=args.compile,
                              ood=args.ood, explain=args.explain)
    if rec is None:  # a rank > 0 under torchrun
        return 0
    parts = [f"top1 {rec['top1']:.2f}%"] + ([f"top5 {rec['top5']:.2f}%"] if "top5" in rec else [])
    parts += [f"loss {rec['loss']:.4f}", f"balanced acc {rec['balanced_accuracy']:.2f}%",
              f"AUC macro {rec['roc_auc_macro']:.4f}", f"ECE {rec['ece']:.4f}"]
    print(f"{rec['num_samples']} images ({rec['backend']}): " + ", ".join(parts))
    from .trust import describe_metrics

    for line in describe_metrics(rec):
        print(line)
    out = Path(rec["_reports"][0]).parent
    print(f"wrote {out}/: metrics.json (top1 in percent), classification_report.txt, predictions.csv, figures")
    for r in rec["_reports"]:
        print(f"report: {r}")
    return 0


# -- predict ---------------------------------------------------------------------------
def add_predict_arguments(p) -> None:
    add_checkpoint_arguments(p)
    p.add_argument("paths", nargs="+", metavar="PATHS", help="Image files, folders (searched recursively) or globs.")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="Labels to show per image. [default: 5]")
    p.add_argument("--output", metavar="FILE", help="Also write the predictions to FILE.csv or FILE.json "
                   "(one row per input; unreadable files carry an error).")
    p.add_argument("--reject", metavar="auto|P", help="Answer 'unknown' when the top probability is below a threshold: "
                   "auto (the one fitted on the run's validation split for --target-precision, stored in best.pt and "
                   "its exports) or a probability P. Default: always answer.")
    p.add_argument("--target-precision", type=float, default=None, metavar="P",
                   help="With --reject auto: the validation precision the threshold must reach. [default: the one "
                        "stored with the model, 0.95 unless trained with another --target-precision]")
    p.add_argument("--explain", metavar="DIR", help="Write a Grad-CAM heat-map overlay of the predicted class for "
                   "every image into DIR (PyTorch weights; the [explain] extra).")
    add_runtime_arguments(p)


def _write_predictions(path: Path, rows, k: int) -> None:
    """``rows``: (source, Prediction or None, error) in input order."""
    if path.suffix.lower() == ".json":
        doc = {"predictions": [{"path": s, "pred": p.label if p else None, "prob": p.prob if p else None,
                                "topk": [{"label": lab, "prob": pr} for lab, pr in p.topk] if p else [],
                                "error": err or None} for s, p, err in rows]}
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "pred", "prob"] + [c for i in range(2, k + 1) for c in (f"top{i}", f"prob{i}")] + ["error"])
        for s, p, err in rows:
            cells = ([p.label, f"{p.prob:.6f}"] + [c for lab, pr in p.topk[1:] for c in (lab, f"{pr:.6f}")]
                     if p else [""] * (2 * k))
            w.writerow([s] + cells + [err])


def _print_table(preds, k: int) -> None:
    width = min(max([len(p.source) for p in preds] + [4]), 60)
    cells = [[f"{lab} ({pr:.3f})" for lab, pr in p.topk] for p in preds]
    for p, row in zip(preds, cells):
        if p.rejected:  # below the --reject threshold: the answer is unknown, the best guess stays visible
            row[0] = f"{p.label} ({row[0]})"
    heads = ["pred (prob)"] + [f"top{i}" for i in range(2, k + 1)]
    cw = [max([len(h)] + [len(r[j]) for r in cells if j < len(r)]) for j, h in enumerate(heads)]
    print(f"{'path':<{width}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, cw)).rstrip())
    for p, row in zip(preds, cells):
        src = p.source if len(p.source) <= width else "..." + p.source[-(width - 3):]
        print(f"{src:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, cw)).rstrip())


def run_predict(args) -> int:
    from .loading import load_any
    from .predict import Classifier, check_topk, expand_paths

    check_runtime_arguments(args)
    if args.output:
        if Path(args.output).suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output {args.output}: use a .csv or .json file name")
        check_output(args.output, "file")
    if args.explain:
        check_output(args.explain, "dir", "--explain")
    if args.target_precision is not None and args.reject != "auto":
        raise UsageError("--target-precision chooses the threshold of --reject auto; add --reject auto")
    files, unmatched = expand_paths(args.paths)
    for pat in unmatched:
        print(f"fvt: warning: no image matches {pat}", file=sys.stderr)
    if not files:
        print("fvt: error: nothing to predict: no image file found in " + " ".join(args.paths), file=sys.stderr)
        return 1
    loaded = load_any(args.checkpoint, model_name=args.model, ema=args.ema, device=args.device)
    amp = prepare(loaded, args)
    print(f"predicting {len(files)} file(s) with {args.checkpoint}: {describe_weights(loaded)}", file=sys.stderr)
    clf = Classifier(loaded, args.batch_size, args.workers, amp_dtype=amp, progress=True, reject=args.reject,
                     target_precision=args.target_precision)
    if args.explain:
        from .explain import require_gradcam, target_layer

        require_gradcam()
        target_layer(loaded.model)  # an export cannot be explained: say so before predicting
    k = check_topk(args.topk, len(clf.classes))
    names, probs, failed = clf.predict_proba_safe(files)
    preds = clf.to_predictions(names, probs, k)
    for src, why in failed:
        print(f"fvt: warning: cannot read {src}: {why}", file=sys.stderr)
    if preds:
        _print_table(preds, k)
    if clf.reject_threshold is not None:
        n_unknown = sum(p.rejected for p in preds)
        print(f"{n_unknown} of {len(preds)} answered 'unknown' (top probability below {clf.reject_threshold:.3f})",
              file=sys.stderr)
    if args.explain and preds:
        from .explain import write_overlays

        print(f"heat maps: {write_overlays(loaded, preds, Path(args.explain))}", file=sys.stderr)
    if args.output:
        by_src, errors = {p.source: p for p in preds}, dict(failed)
        rows = [(str(f), by_src.get(str(f)), errors.get(str(f), "")) for f in files]
        _write_predictions(Path(args.output), rows, k)
        print(f"wrote {args.output}")
    if not preds:
        print(f"fvt: error: none of the {len(files)} file(s) could be read", file=sys.stderr)
        return 1
    if failed:
        print(f"{len(preds)} predicted, {len(failed)} unreadable (listed above)", file=sys.stderr)
    return 0


# -- export ----------------------------------------------------------------------------
def add_export_arguments(p) -> None:
    from .export import FORMATS

    add_checkpoint_arguments(p, "Export")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx, openvino, tensorrt, coreml, torchscript, "
                   "safetensors (+ JSON sidecar) or timm-folder (config.json + model.safetensors + README.md).")
    p.add_argument("--output", metavar="PATH", help="Output file (a folder for timm-folder). Default: next to the "
                   "checkpoint, e.g. best.onnx.")
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset. [default: 17]")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic height/width too, where the model allows "
                   "(the batch axis is always dynamic).")
    p.add_argument("--half", action="store_true", help="fp16 (onnx, openvino, tensorrt, coreml).")
    p.add_argument("--int8", nargs="?", const="static", choices=("static", "dynamic"), default=None,
                   help="int8 post-training quantization: static (calibrated on images, default) or dynamic (ONNX "
                   "only); OpenVINO uses NNCF.")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph with onnxslim.")
    p.add_argument("--with-normalize", action="store_true", help="ONNX: mean/std inside the graph; the input is "
                   "RGB in 0..255 (N, 3, H, W).")
    p.add_argument("--data", metavar="DIR", help="Images for calibration and the check against PyTorch. "
                   "Default: the run's validation split.")
    p.add_argument("--check-images", type=int, default=64, metavar="N",
                   help="Images used to check (and calibrate) the export. [default: 64]")
    p.add_argument("--no-check", dest="check", action="store_false", help="Skip the check against PyTorch.")
    add_runtime_arguments(p)


def _default_output(ckpt: Path, fmt: str, downloaded: bool = False) -> Path:
    from .export import SUFFIX

    if downloaded:  # a file in a download cache: its export goes to the current folder, not beside it
        base = Path.cwd() / (ckpt.name.split(".")[0] + ".pt")
    else:
        base = ckpt if ckpt.is_file() else ckpt / "model"
    return base.with_name(base.stem + "-timm") if fmt == "timm-folder" else base.with_suffix(SUFFIX[fmt])


def run_export(args) -> int:
    from .export import SUFFIX, ExportOptions, export
    from .export_data import check_batches
    from .loading import load_any, resolve_checkpoint

    check_runtime_arguments(args)
    ckpt = resolve_checkpoint(args.checkpoint, args.model)
    downloaded = ckpt != Path(args.checkpoint).expanduser()
    out = Path(args.output).expanduser() if args.output else _default_output(ckpt, args.format, downloaded)
    want = SUFFIX[args.format]
    if want and out.suffix.lower() != want:
        raise UsageError(f"--output {out}: a {args.format} export needs a {want} name (fvt recognises it by that)")
    if args.format == "timm-folder":
        check_output(out, "dir")
        if out.is_dir() and any(out.iterdir()):
            raise UsageError(f"--output {out} is a non-empty folder; a timm folder export needs a new or empty one")
    else:
        check_output(out, "file")
    opts = ExportOptions(args.opset, args.dynamic, args.half, args.int8, args.simplify, args.with_normalize,
                         args.check)
    loaded = load_any(ckpt, model_name=args.model, ema=args.ema, device="cpu")
    print(f"exporting {loaded.model_name} ({describe_weights(loaded)}) to {args.format}", file=sys.stderr)
    images, source = check_batches(loaded, args.data, args.check_images, args.batch_size, args.workers)
    path, facts = export(loaded, args.format, out, opts, images, source)
    print(f"exported {loaded.model_name} ({len(loaded.classes)} classes, {opts.precision}) to {path}")
    if "verify" in facts:
        from .verify import describe

        print(f"check: {describe(facts['verify'])}" + (" -> ok" if not facts["verify"].get("skipped") else ""))
        if "verify_file" in facts:
            print(f"check written to {facts['verify_file']}")
    if "sidecar" in facts:
        print(f"metadata: {facts['sidecar']}")
    if args.format == "timm-folder":
        print(f"load: import fvt, timm; timm.create_model('local-dir:{path}', pretrained=True)")
    elif args.format not in ("tensorrt", "coreml"):
        print(f"try: fvt predict --checkpoint {path} IMAGES...")
    return 0


# -- demo ------------------------------------------------------------------------------
def add_demo_arguments(p) -> None:
    p.add_argument("--output", default="fvt-demo", metavar="DIR", help="Where the demo writes everything. [default: fvt-demo]")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="Training epochs (default: the demo's recipe).")


def run_demo(args) -> int:
    from .demo import run

    return run(Path(args.output), epochs=args.epochs)

