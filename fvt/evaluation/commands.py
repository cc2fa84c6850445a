"""``fvt eval``, ``fvt predict``, ``fvt export`` and ``fvt demo``: flags and entry points."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from ..errors import UsageError


# -- eval ------------------------------------------------------------------------------
def add_eval_arguments(p) -> None:
    p.add_argument("--checkpoint", "--pretrained", required=True, metavar="CKPT", help="fvt checkpoint (RUN/best.pt) or safetensors export.")
    p.add_argument("--data", metavar="DIR", help="Folder of class folders, a pre-split root (its val folder is used) "
                   "or a CSV of path,label. Default: the run's own validation split.")
    p.add_argument("--output", metavar="DIR", help="Where metrics, figures and report.html go. Default: RUN/eval.")
    p.add_argument("--ema", action="store_true", help="Evaluate the EMA weights instead of the raw ones.")
    p.add_argument("--batch-size", type=int, metavar="N", help="Batch size per process. Default: the run's eval batch size, else 64.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N. Under torchrun: one device per process.")


def run_eval(args) -> int:
    from .evaluate import evaluate_checkpoint

    rec = evaluate_checkpoint(args.checkpoint, args.data, args.output, args.ema, args.batch_size, args.device)
    if rec is None:  # a rank > 0 under torchrun
        return 0
    parts = [f"top1 {rec['top1']:.2f}%"] + ([f"top5 {rec['top5']:.2f}%"] if "top5" in rec else [])
    parts += [f"loss {rec['loss']:.4f}", f"balanced acc {rec['balanced_accuracy']:.2f}%",
              f"AUC macro {rec['roc_auc_macro']:.4f}", f"ECE {rec['ece']:.4f}"]
    print(f"{rec['num_samples']} images: " + ", ".join(parts))
    out = Path(rec["_reports"][0]).parent
    print(f"wrote {out}/: metrics.json (top1 in percent), classification_report.txt, predictions.csv, figures")
    for r in rec["_reports"]:
        print(f"report: {r}")
    return 0


# -- predict ---------------------------------------------------------------------------
def add_predict_arguments(p) -> None:
    p.add_argument("--checkpoint", "--pretrained", required=True, metavar="CKPT",
                   help="fvt checkpoint, MODEL.onnx or MODEL.safetensors export, or an official .pth.tar with --model; "
                        "also official (with --model), hf-hub:OWNER/REPO[:FILE] or https://URL.")
    p.add_argument("paths", nargs="+", metavar="PATHS", help="Image files, folders (searched recursively) or globs.")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="Labels to show per image. [default: 5]")
    p.add_argument("--output", metavar="FILE", help="Also write the predictions to FILE.csv or FILE.json.")
    p.add_argument("--model", metavar="NAME", help="Model name for an official checkpoint (labelled with ImageNet names).")
    p.add_argument("--ema", action="store_true", help="Use the EMA weights of an fvt checkpoint.")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="Images per forward pass. [default: 32]")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (ONNX runs on onnxruntime's CPU).")


def _write_predictions(path: Path, preds, failed, k: int) -> None:
    if path.suffix.lower() == ".json":
        doc = {"predictions": [{"path": p.source, "pred": p.label, "prob": p.prob,
                                "topk": [{"label": lab, "prob": pr} for lab, pr in p.topk]} for p in preds],
               "failed": [{"path": s, "error": e} for s, e in failed]}
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "pred", "prob"] + [c for i in range(2, k + 1) for c in (f"top{i}", f"prob{i}")])
        for p in preds:
            w.writerow([p.source, p.label, f"{p.prob:.6f}"] + [c for lab, pr in p.topk[1:] for c in (lab, f"{pr:.6f}")])


def _print_table(preds, k: int) -> None:
    width = min(max([len(p.source) for p in preds] + [4]), 60)
    cells = [[f"{lab} ({pr:.3f})" for lab, pr in p.topk] for p in preds]
    heads = ["pred (prob)"] + [f"top{i}" for i in range(2, k + 1)]
    cw = [max([len(h)] + [len(r[j]) for r in cells if j < len(r)]) for j, h in enumerate(heads)]
    print(f"{'path':<{width}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, cw)).rstrip())
    for p, row in zip(preds, cells):
        src = p.source if len(p.source) <= width else "..." + p.source[-(width - 3):]
        print(f"{src:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, cw)).rstrip())


def run_predict(args) -> int:
    from .predict import Classifier, check_topk, expand_paths

    if args.output and Path(args.output).suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"--output {args.output}: use a .csv or .json file name")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    files, unmatched = expand_paths(args.paths)
    for pat in unmatched:
        print(f"fvt: warning: no image matches {pat}", file=sys.stderr)
    if not files:
        print("fvt: error: nothing to predict: no image file found in " + " ".join(args.paths), file=sys.stderr)
        return 1
    clf = Classifier.from_checkpoint(args.checkpoint, model=args.model, ema=args.ema, device=args.device,
                                     batch_size=args.batch_size)
    k = check_topk(args.topk, len(clf.classes))
    names, probs, failed = clf.predict_proba_safe(files)
    preds = clf.to_predictions(names, probs, k)
    for src, why in failed:
        print(f"fvt: warning: cannot read {src}: {why}", file=sys.stderr)
    if preds:
        _print_table(preds, k)
    if args.output:
        _write_predictions(Path(args.output), preds, failed, k)
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

    p.add_argument("--checkpoint", "--pretrained", required=True, metavar="CKPT", help="fvt checkpoint (or an official .pth.tar with --model).")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx (checked with onnxruntime), safetensors "
                   "(+ JSON sidecar) or torchscript.")
    p.add_argument("--output", metavar="FILE", help="Output file. Default: next to the checkpoint, e.g. best.onnx.")
    p.add_argument("--ema", action="store_true", help="Export the EMA weights of an fvt checkpoint.")
    p.add_argument("--model", metavar="NAME", help="Model name for an official checkpoint.")


def run_export(args) -> int:
    from .export import SUFFIX, TOLERANCE, export
    from .loading import load_any

    from ..models.hub import is_spec, resolve_weights

    ckpt = resolve_weights(args.checkpoint, args.model) if is_spec(args.checkpoint) else Path(args.checkpoint)
    out = Path(args.output) if args.output else Path(ckpt.name.split(".")[0]).with_suffix(SUFFIX[args.format]) \
        if is_spec(args.checkpoint) else ckpt.with_suffix(SUFFIX[args.format])
    if args.format == "onnx" and out.suffix.lower() != ".onnx":
        raise UsageError(f"--output {out}: an ONNX export needs a .onnx file name (fvt predict recognises it by that)")
    if args.format == "safetensors" and out.suffix.lower() != ".safetensors":
        raise UsageError(f"--output {out}: a safetensors export needs a .safetensors file name")
    loaded = load_any(ckpt, model_name=args.model, ema=args.ema, device="cpu")
    path, facts = export(loaded, args.format, out)
    print(f"exported {loaded.model_name} ({len(loaded.classes)} classes) to {path}")
    if "max_abs_diff" in facts:
        runtime = "onnxruntime" if args.format == "onnx" else "reloaded TorchScript"
        print(f"check: max abs logit difference {runtime} vs PyTorch = {facts['max_abs_diff']:.3g} "
              f"(limit {TOLERANCE:g}) -> ok")
    if "sidecar" in facts:
        print(f"metadata: {facts['sidecar']}")
    print(f"try: fvt predict --checkpoint {path} IMAGES..." if args.format != "torchscript"
          else f"load: torch.jit.load('{path}', _extra_files={{'fvt.json': ''}})")
    return 0


# -- demo ------------------------------------------------------------------------------
def add_demo_arguments(p) -> None:
    p.add_argument("--output", default="fvt-demo", metavar="DIR", help="Where the demo writes everything. [default: fvt-demo]")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="Training epochs (default: the demo's recipe).")


def run_demo(args) -> int:
    from .demo import run

    return run(Path(args.output), epochs=args.epochs)

