"""``fvt eval``, ``fvt predict`` and ``fvt demo``: flags and entry points, and the flags every command
that runs a model shares (``fvt export`` lives in export_command.py)."""

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
                   "MODEL.onnx / .xml (OpenVINO) / .pt2 (torch.export or AOTInductor) / .engine (TensorRT) / "
                   ".mlpackage / TorchScript .pt, or a folder holding one export; an official .pth.tar with --model.")


def add_checkpoint_arguments(p, what: str = "Use", required: bool = True) -> None:
    p.add_argument("--checkpoint", "--pretrained", required=required, metavar="CKPT", help=CHECKPOINT_HELP)
    p.add_argument("--model", metavar="NAME", help="Model name for an official checkpoint (labelled with ImageNet names).")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--ema", dest="ema", action="store_const", const=True, default=None,
                   help=f"{what} the EMA weights. Default: the weights the run selected best.pt by.")
    w.add_argument("--raw", dest="ema", action="store_const", const=False, help=f"{what} the raw (non-EMA) weights.")


def add_runtime_arguments(p, batch_default: Optional[int] = 32, device_help: Optional[str] = None) -> None:
    """The flags every command that runs a model shares."""
    p.add_argument("--device", default="auto", help=device_help or "auto (the accelerator torch finds, else cpu) or "
                   "any torch device: cpu, cuda, cuda:N, mps, xpu, ... [default: auto]")
    p.add_argument("--batch-size", type=int, default=batch_default, metavar="N",
                   help="Images per forward pass." + (f" [default: {batch_default}]" if batch_default else
                                                     " Default: the run's eval batch size, else 64."))
    p.add_argument("--workers", type=int, default=2, metavar="N", help="DataLoader processes decoding images. [default: 2]")
    p.add_argument("--amp", choices=("none", "auto", "bf16", "fp16"), default="none",
                   help="Autocast precision for PyTorch weights (none, auto, bf16, fp16). [default: none]")
    p.add_argument("--compile", action="store_true", help="torch.compile the PyTorch model before running it.")


def add_tta_argument(p) -> None:
    p.add_argument("--tta", choices=("none", "flip", "crops"), default="none",
                   help="Test-time augmentation: flip (the image and its mirror) or crops (four corners and the centre "
                        "of the eval resize); the views' probabilities are averaged. [default: none]")


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
    add_tta_argument(p)
    p.add_argument("--knn", type=int, default=None, metavar="K", help="Also score a K-nearest-neighbour classifier "
                   "on embeddings (pooled pre-logits) of the run's training split: a check of the features alone.")
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
                              ood=args.ood, explain=args.explain, tta=args.tta, knn=args.knn)
    if rec is None:  # a rank > 0 under torchrun
        return 0
    if rec.get("task") == "multilabel":
        parts = [f"mAP {rec['map_macro']:.4f} (micro {rec['map_micro']:.4f})", f"F1 macro {rec['f1_macro']:.4f}",
                 f"subset accuracy {rec['subset_accuracy']:.4f}", f"Hamming loss {rec['hamming_loss']:.4f}"]
    else:
        parts = [f"top1 {rec['top1']:.2f}%"] + ([f"top5 {rec['top5']:.2f}%"] if "top5" in rec else [])
        parts += [f"loss {rec['loss']:.4f}", f"balanced acc {rec['balanced_accuracy']:.2f}%",
                  f"AUC macro {rec['roc_auc_macro']:.4f}", f"ECE {rec['ece']:.4f}"]
    tta = f", tta {args.tta}" if args.tta != "none" else ""
    skipped = rec.get("skipped") or 0
    note = f" ({skipped} more skipped: unreadable, each named above)" if skipped else ""
    print(f"{rec['num_samples']} images{note} ({rec['backend']}{tta}): " + ", ".join(parts))
    if "knn_k" in rec:
        score = f"top1 {rec['knn_top1']:.2f}%" if "knn_top1" in rec else f"mAP {rec['knn_map']:.4f}"
        print(f"k-NN (k={rec['knn_k']}, cosine, {rec['knn_train_images']} training images): {score}")
    from .trust import describe_metrics

    for line in describe_metrics(rec):
        print(line)
    out = Path(rec["_reports"][0]).parent
    unit = "scores as fractions" if rec.get("task") == "multilabel" else "top1 in percent"
    print(f"wrote {out}/: metrics.json ({unit}), classification_report.txt, predictions.csv, figures")
    for r in rec["_reports"]:
        print(f"report: {r}")
    return 0


# -- predict ---------------------------------------------------------------------------
def add_predict_arguments(p) -> None:
    add_checkpoint_arguments(p, required=False)
    p.add_argument("paths", nargs="+", metavar="PATHS", help="Image files, folders (searched recursively) or globs.")
    p.add_argument("--url", metavar="URL", help="Ask a running `fvt serve` at URL (http://HOST:PORT) instead of "
                   "loading --checkpoint here; the output is the same (--model, --ema/--raw and the runtime flags "
                   "below then do not apply: the server chose them).")
    p.add_argument("--token", metavar="TOKEN", help="With --url: the server's bearer token. Default: the "
                   "FVT_SERVE_TOKEN environment variable.")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="Labels to show per image. [default: 5]")
    p.add_argument("--output", metavar="FILE", help="Also write the predictions to FILE.csv or FILE.json "
                   "(one row per input; unreadable files carry an error). Multi-label models: the label set "
                   "(labels, joined by ';') and one probability column per label.")
    p.add_argument("--reject", metavar="auto|P", help="Answer 'unknown' when the top probability is below a threshold: "
                   "auto (the one fitted on the run's validation split for --target-precision, stored in best.pt and "
                   "its exports) or a probability P. Default: always answer.")
    p.add_argument("--target-precision", type=float, default=None, metavar="P",
                   help="With --reject auto: the validation precision the threshold must reach. [default: the one "
                        "stored with the model, 0.95 unless trained with another --target-precision]")
    p.add_argument("--explain", metavar="DIR", help="Write a Grad-CAM heat-map overlay of the predicted class for "
                   "every image into DIR (PyTorch weights; the [explain] extra).")
    add_tta_argument(p)
    add_runtime_arguments(p)


def _write_label_sets(path: Path, rows, classes) -> None:
    """Multi-label predictions: path, labels (the predicted set joined by ';'), one probability per label, error
    (JSON: the ``prediction_row`` dicts as they are)."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"predictions": list(rows)}, indent=2, ensure_ascii=False), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels", *classes, "error"])
        for r in rows:
            probs = [f"{r['probs'][c]:.6f}" for c in classes] if "labels" in r else [""] * len(classes)
            w.writerow([r["path"], ";".join(r.get("labels") or []), *probs, r["error"] or ""])


def _write_predictions(path: Path, rows, k: int) -> None:
    """``rows``: ``fvt.evaluation.predict.prediction_row`` dicts in input order (JSON as they are, CSV flat)."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"predictions": list(rows)}, indent=2, ensure_ascii=False), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "pred", "prob"] + [c for i in range(2, k + 1) for c in (f"top{i}", f"prob{i}")] + ["error"])
        for row in rows:
            cells = ([row["pred"], f"{row['prob']:.6f}"] +
                     [c for t in row["topk"][1:] for c in (t["label"], f"{t['prob']:.6f}")]
                     if row["pred"] is not None else [""] * (2 * k))
            w.writerow([row["path"]] + cells + [row["error"] or ""])


def _print_label_sets(rows) -> None:
    width = min(max([len(r["path"]) for r in rows] + [4]), 60)
    print(f"{'path':<{width}}  labels (probability)")
    for r in rows:
        src = r["path"] if len(r["path"]) <= width else "..." + r["path"][-(width - 3):]
        shown = ", ".join(f"{c} ({r['probs'][c]:.3f})" if c in r["probs"] else c for c in r["labels"]) or "(none)"
        print(f"{src:<{width}}  {shown}")


def _print_table(rows, k: int) -> None:
    width = min(max([len(r["path"]) for r in rows] + [4]), 60)
    cells = [[f"{t['label']} ({t['prob']:.3f})" for t in r["topk"]] for r in rows]
    for r, row in zip(rows, cells):
        if r["pred"] != r["topk"][0]["label"]:  # rejected: the answer is unknown, the best guess stays visible
            row[0] = f"{r['pred']} ({row[0]})"
    heads = ["pred (prob)"] + [f"top{i}" for i in range(2, k + 1)]
    cw = [max([len(h)] + [len(r[j]) for r in cells if j < len(r)]) for j, h in enumerate(heads)]
    print(f"{'path':<{width}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, cw)).rstrip())
    for r, row in zip(rows, cells):
        src = r["path"] if len(r["path"]) <= width else "..." + r["path"][-(width - 3):]
        print(f"{src:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, cw)).rstrip())


def _predict_here(args, files) -> tuple:
    """(rows in input order, k) from the model loaded in this process; also the --reject count and the
    --explain heat maps, which need the weights."""
    from .loading import load_any
    from .predict import Classifier, check_topk, prediction_row

    loaded = load_any(args.checkpoint, model_name=args.model, ema=args.ema, device=args.device)
    amp = prepare(loaded, args)
    print(f"predicting {len(files)} file(s) with {args.checkpoint}: {describe_weights(loaded)}", file=sys.stderr)
    clf = Classifier(loaded, args.batch_size, args.workers, amp_dtype=amp, progress=True, reject=args.reject,
                     target_precision=args.target_precision, tta=args.tta)
    if args.explain:
        from .explain import require_gradcam, target_layer

        require_gradcam()
        target_layer(loaded.model)  # an export cannot be explained: say so before predicting
    multilabel = clf.task == "multilabel"
    k = len(clf.classes) if multilabel else check_topk(args.topk, len(clf.classes))
    names, probs, failed = clf.predict_proba_safe(files)
    preds = clf.to_predictions(names, probs, k)
    if clf.reject_threshold is not None:
        n_unknown = sum(p.rejected for p in preds)
        print(f"{n_unknown} of {len(preds)} answered 'unknown' (top probability below {clf.reject_threshold:.3f})",
              file=sys.stderr)
    if args.explain and preds:
        from .explain import write_overlays

        print(f"heat maps: {write_overlays(loaded, preds, Path(args.explain))}", file=sys.stderr)
    by_src, errors = {p.source: p for p in preds}, dict(failed)
    return [prediction_row(str(f), by_src.get(str(f)), errors.get(str(f), ""), clf.classes) for f in files], k


def _check_predict_arguments(args) -> None:
    check_runtime_arguments(args)
    if (args.checkpoint is None) == (args.url is None):
        raise UsageError("give --checkpoint CKPT (predict in this process) or --url http://HOST:PORT (ask a "
                         "running fvt serve), one of the two")
    if args.url is None and args.token:
        raise UsageError("--token is for --url (a server's bearer token); a local --checkpoint needs none")
    if args.url is not None and (args.reject or args.target_precision is not None or args.explain):
        raise UsageError("--reject, --target-precision and --explain need the weights here (--checkpoint); a "
                         "server applies its own threshold (fvt serve --reject)")
    if args.output:
        if Path(args.output).suffix.lower() not in (".csv", ".json"):
            raise UsageError(f"--output {args.output}: use a .csv or .json file name")
        check_output(args.output, "file")
    if args.explain:
        check_output(args.explain, "dir", "--explain")
    if args.target_precision is not None and args.reject != "auto":
        raise UsageError("--target-precision chooses the threshold of --reject auto; add --reject auto")


def run_predict(args) -> int:
    from .predict import expand_paths

    _check_predict_arguments(args)
    files, unmatched = expand_paths(args.paths)
    for pat in unmatched:
        print(f"fvt: warning: no image matches {pat}", file=sys.stderr)
    if not files:
        print("fvt: error: nothing to predict: no image file found in " + " ".join(args.paths), file=sys.stderr)
        return 1
    if args.url:
        from .remote import predict_remote

        rows, k = predict_remote(args.url, files, args.topk, token=args.token)
    else:
        rows, k = _predict_here(args, files)
    good = [r for r in rows if r["pred"] is not None]
    for r in rows:
        if r["pred"] is None:
            print(f"fvt: warning: cannot read {r['path']}: {r['error']}", file=sys.stderr)
    classes = next((list(r["probs"]) for r in good if "labels" in r), None)  # a multi-label model's labels
    if good:
        _print_label_sets(good) if classes is not None else _print_table(good, k)
    if args.output:
        if classes is not None:
            _write_label_sets(Path(args.output), rows, classes)
        else:
            _write_predictions(Path(args.output), rows, k)
        print(f"wrote {args.output}")
    if not good:
        print(f"fvt: error: none of the {len(files)} file(s) could be read", file=sys.stderr)
        return 1
    if len(good) < len(rows):
        print(f"{len(good)} predicted, {len(rows) - len(good)} unreadable (listed above)", file=sys.stderr)
    return 0


# -- demo ------------------------------------------------------------------------------
def add_demo_arguments(p) -> None:
    p.add_argument("--output", default="fvt-demo", metavar="DIR", help="Where the demo writes everything. [default: fvt-demo]")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="Training epochs (default: the demo's recipe).")


def run_demo(args) -> int:
    from .demo import run

    return run(Path(args.output), epochs=args.epochs)

