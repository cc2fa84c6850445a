"""Fixtures shared by the evaluation/predict/export tests (no tests here).

A tiny labelled image folder and a checkpoint in the documented fvt format, built at run
time in tmp_path from a randomly initialised ``faster_vit_nano`` at 32 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMG = 32
CLASSES = ["circle", "square", "stripes"]


def make_folder(root: Path, per_class: int = 6, classes=CLASSES, seed: int = 0) -> Path:
    """root/<class>/<i>.png: three visually different synthetic patterns."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48]
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = {0: ((yy - 24) ** 2 + (xx - 24) ** 2 < 200), 1: (abs(yy - 24) < 12) & (abs(xx - 24) < 12),
                    2: (xx // 6) % 2 == 0}.get(c % 3)
            a = np.stack([base * 200, base * (60 + 40 * c), (1 - base) * 120], axis=-1).astype(np.float64)
            a = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def make_checkpoint(path: Path, data: Path, classes=CLASSES, ema: bool = True, seed: int = 0) -> Path:
    """An fvt checkpoint (docs/architecture.md format) of a random faster_vit_nano."""
    import fvt
    from fvt.config import Config
    from fvt.data import Preprocessing

    torch.manual_seed(seed)
    model = fvt.create_model("faster_vit_nano", num_classes=len(classes), img_size=IMG).eval()
    cfg = Config()
    cfg.set("data", str(data))
    cfg.set("model", "faster_vit_nano")
    cfg.set("img_size", [IMG])
    cfg.set("workers", 0)
    pre = Preprocessing(input_size=(IMG, IMG), crop_pct=1.0, interpolation="bilinear")
    ema_sd = {k: (v + 0.01 * torch.randn_like(v)) if v.is_floating_point() else v.clone()
              for k, v in model.state_dict().items()} if ema else None
    ckpt = {"fvt_version": fvt.__version__, "model_name": "faster_vit_nano", "model_kwargs": dict(model.model_kwargs),
            "state_dict": model.state_dict(), "state_dict_ema": ema_sd, "classes": list(classes),
            "preprocessing": pre.to_dict(), "config": cfg.to_dict(), "epoch": 1, "step": 10,
            "metrics": {"top1": 50.0}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def manual_probs(ckpt: Path, paths) -> np.ndarray:
    """Class probabilities of ``paths`` from the checkpoint's model in plain PyTorch with PIL preprocessing
    (resize to the input size; the fixtures use crop_pct 1.0): an independent reference for predict/serve."""
    import fvt

    ck = torch.load(ckpt, weights_only=True)
    model = fvt.create_model(ck["model_name"], **ck["model_kwargs"]).eval()
    model.load_state_dict(ck["state_dict"])
    h, w = ck["preprocessing"]["input_size"]
    mean, std = np.array(ck["preprocessing"]["mean"]), np.array(ck["preprocessing"]["std"])
    gray = len(mean) == 1  # a one-channel model sees the luminance

    def pixels(p):
        a = np.asarray(Image.open(p).convert("L" if gray else "RGB").resize((w, h), Image.BILINEAR)) / 255.0
        return ((a[..., None] if gray else a) - mean) / std

    x = np.stack([pixels(p).transpose(2, 0, 1) for p in paths])
    with torch.no_grad():
        return torch.softmax(model(torch.tensor(x, dtype=torch.float32)), 1).numpy()
