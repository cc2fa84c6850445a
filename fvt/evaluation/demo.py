"""``fvt demo``: the whole job in a few minutes on a laptop CPU, with no data to download.

scikit-learn ships 1,797 handwritten digits (8x8, 10 classes). The demo writes them as an
image folder (``DIR/digits/<digit>/<n>.png``, upscaled to 32 px), trains a small FasterViT
(``faster_vit_nano``) on an automatic 80/20 split, evaluates it, writes report.html,
exports ONNX, predicts a few images and prints where everything is."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from ..errors import UsageError

IMG = 32
EPOCHS = 8


def write_digits(root: Path, size: int = IMG) -> List[Path]:
    """The scikit-learn digits as root/<digit>/<n>.png (white on black); returns the files."""
    from sklearn.datasets import load_digits

    d = load_digits()
    files = []
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        a = np.clip(img * (255.0 / 16.0), 0, 255).astype(np.uint8)  # 0..16 grey levels -> 0..255
        path = folder / f"{i:04d}.png"
        if not path.exists():
            Image.fromarray(a, mode="L").resize((size, size), Image.BICUBIC).save(path)
        files.append(path)
    return files


def demo_config(data: Path, run_dir: Path, epochs: int):
    """The recipe: small model, 32 px, no flips (a flipped digit is another symbol), mild crops."""
    from ..config import Config

    cfg = Config()
    for key, value in {
        "data": str(data), "output": str(run_dir), "model": "faster_vit_nano", "img_size": [IMG],
        "epochs": epochs, "warmup_epochs": 1, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05,
        "workers": 0, "val_split": 0.2, "hflip": 0.0, "auto_augment": None, "color_jitter": 0.0,
        "reprob": 0.0, "scale": [0.6, 1.0], "ratio": [0.85, 1.18], "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
        "ema": False, "drop_path_rate": 0.0, "seed": 0, "amp": "none",
    }.items():
        cfg.set(key, value)
    return cfg


def _clear_previous_run(run_dir: Path, data: Path, log) -> None:
    """A second ``fvt demo`` into the same folder starts over instead of mixing two runs."""
    if not run_dir.exists():
        return
    import yaml

    cfg_file = run_dir / "config.yaml"
    try:
        previous = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None
    except yaml.YAMLError:
        previous = None
    if not previous or str((previous.get("data") or {}).get("data")) != str(data):
        raise UsageError(f"{run_dir} exists and is not a previous demo run; choose another --output")
    log(f"removing the previous demo run in {run_dir}")
    shutil.rmtree(run_dir)


def run(out: Path, epochs: Optional[int] = None, log=print) -> int:
    from ..engine import train
    from .evaluate import evaluate_checkpoint
    from .export import export
    from .loading import load_any
    from .predict import Classifier

    from ..extras import require

    require("onnxruntime", "onnx", "fvt demo (it exports and runs an ONNX model)")  # before any work
    require("onnx", "onnx", "fvt demo (it exports and runs an ONNX model)")
    t0 = time.time()
    out = Path(out).expanduser()
    data, run_dir = out / "digits", out / "run"
    _clear_previous_run(run_dir, data, log)
    files = write_digits(data)
    log(f"[1/5] wrote {len(files)} handwritten-digit images (scikit-learn) to {data}/<digit>/")
    cfg = demo_config(data, run_dir, epochs or EPOCHS)
    log(f"[2/5] training faster_vit_nano at {IMG} px for {cfg.sched.epochs} epochs on an 80/20 split ...")
    train(cfg)
    best = run_dir / "best.pt"
    log(f"[3/5] evaluating {best} on the validation split ...")
    rec = evaluate_checkpoint(best, workers=0, log=log)
    log(f"      top-1 {rec['top1']:.1f}% (chance: 10%), balanced accuracy {rec['balanced_accuracy']:.1f}%, "
        f"ROC AUC {rec['roc_auc_macro']:.3f}, ECE {rec['ece']:.3f}")
    onnx_path = run_dir / "model.onnx"
    _, facts = export(load_any(best, device="cpu"), "onnx", onnx_path)
    log(f"[4/5] exported {onnx_path} (onnxruntime vs PyTorch max abs diff {facts['max_abs_diff']:.2g})")
    with open(run_dir / "eval" / "predictions.csv", newline="", encoding="utf-8") as f:
        held_out = [row["path"] for row in csv.DictReader(f)]  # validation images: never trained on
    sample = [held_out[i] for i in np.linspace(0, len(held_out) - 1, 6).astype(int)]
    preds = Classifier.from_checkpoint(onnx_path).predict(sample, topk=3)
    log("[5/5] predictions on a few validation images (ONNX model; the folder name is the true digit):")
    for p in preds:
        alt = ", ".join(f"{lab} {pr:.2f}" for lab, pr in p.topk[1:])
        log(f"      {Path(p.source).relative_to(out)}: {p.label} ({p.prob:.2f}; then {alt})")
    eval_dir = run_dir / "eval"
    log(f"\ndone in {time.time() - t0:.0f} s. Artifacts:")
    artifacts = [(run_dir / "report.html", "the report: open it in a browser (config, curves, every figure)"),
                 (best, "best checkpoint"), (run_dir / "last.pt", "last checkpoint (resume with --resume auto)"),
                 (run_dir / "metrics.csv", "per-epoch metrics"), (run_dir / "curves.png", "training curves"),
                 (eval_dir / "metrics.json", "eval metrics (top1 in percent)"),
                 (eval_dir / "predictions.csv", "per-image predictions and probabilities"),
                 (eval_dir / "confusion_matrix.png", "confusion matrix (also ROC, PR, reliability, mistakes PNGs)"),
                 (onnx_path, "ONNX export with classes + preprocessing inside")]
    width = max(len(str(p)) for p, _ in artifacts)
    for path, what in artifacts:
        log(f"  {str(path):<{width}}  {what}")
    log("\nNext, on your own images (one sub-folder per class):\n"
        "  fvt data inspect my_photos/\n"
        "  fvt train --data my_photos/ --config finetune --output runs/mine   # fine-tune the official weights\n"
        "                                  # (the recipe: fvt configs show finetune; any flag overrides it)\n"
        "  fvt eval --checkpoint runs/mine/best.pt\n"
        "  fvt predict --checkpoint runs/mine/best.pt new_photos/ --output preds.csv\n"
        "  fvt export --checkpoint runs/mine/best.pt --format onnx --output mine.onnx")
    return 0
