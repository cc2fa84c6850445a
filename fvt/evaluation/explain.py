"""Why the model decided: Grad-CAM heat maps (the maintained ``grad-cam`` package, extra ``[explain]``).

Layer: FasterViT's final feature map, ``model.norm`` -- the BatchNorm after the last stage,
whose (N, C, H/32, W/32) output the classifier average-pools and reads with one linear
layer. Its last stages are attention blocks over windows of tokens, but each stage puts its
tokens back onto the image grid before returning (``window_reverse``), so the map is
spatial already and no reshape transform is needed. At this layer Grad-CAM's channel
weights (mean gradient over positions) are exactly the head's weights for the class divided
by H*W, so the heat map is the class activation map of the very features the decision was
read from: nothing between the map and the logit can move the evidence elsewhere. The price
is resolution: one cell per 32x32 pixels (7x7 at 224 px), upsampled bilinearly.

``heatmaps(model, batch, class_indices)``: (N, H, W) maps in [0, 1] at input resolution.
``overlay(image, heatmap)``: the map blended over the image (jet colours), as RGB uint8.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..errors import UsageError

EXTRA = "explain"


def require_gradcam():
    from ..extras import require

    return require("pytorch_grad_cam", EXTRA, "Grad-CAM heat maps")


def available() -> bool:
    from ..extras import available as has

    return has("pytorch_grad_cam")


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The layer whose activations Grad-CAM weighs (see the module docstring for why)."""
    if hasattr(model, "levels") and isinstance(getattr(model, "norm", None), torch.nn.Module):
        return model.norm
    raise UsageError(f"heat maps need an fvt FasterViT model with PyTorch weights, not {type(model).__name__} "
                     "(an exported file cannot be explained: use the checkpoint it came from)")


def heatmaps(model: torch.nn.Module, batch: torch.Tensor, class_indices: Sequence[int]) -> np.ndarray:
    """Grad-CAM of class ``class_indices[i]`` for image ``batch[i]``: float32 (N, H, W) in [0, 1]."""
    gc = require_gradcam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = target_layer(model)
    was_training = model.training
    # Only the target layer's own parameters keep requires_grad: the gradient Grad-CAM reads (logit w.r.t.
    # the layer's output) is the same, and backward stops there instead of running through the whole network.
    flags = {p: p.requires_grad for p in model.parameters()}
    own = set(layer.parameters())
    model.eval()
    try:
        for p in flags:
            p.requires_grad_(p in own)
        with torch.enable_grad(), gc.GradCAM(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in class_indices])
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def denormalize(batch: torch.Tensor, preprocessing: dict) -> np.ndarray:
    """Model input (N, 3, H, W) back to RGB floats in [0, 1], (N, H, W, 3): what the model saw."""
    mean = torch.tensor(preprocessing["mean"], dtype=batch.dtype).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], dtype=batch.dtype).view(1, -1, 1, 1)
    return (batch.detach().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, min_side: int = 224) -> Image.Image:
    """The heat map blended over ``image`` (H, W, 3 floats in [0, 1]); upscaled to ``min_side``."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = show_cam_on_image(np.ascontiguousarray(image, dtype=np.float32), heatmap, use_rgb=True, image_weight=0.55)
    out = Image.fromarray(rgb)
    scale = max(1.0, min_side / max(1, min(out.size)))
    return out.resize((round(out.width * scale), round(out.height * scale)), Image.BILINEAR) if scale > 1 else out


def explain_batch(model: torch.nn.Module, batch: torch.Tensor, class_indices: Sequence[int],
                  preprocessing: dict, min_side: int = 224) -> List[Image.Image]:
    """Overlays for a preprocessed batch: the heat map of each image's given class over it."""
    from ..data.channels import channel_images

    maps = heatmaps(model, batch, class_indices)  # gray / N-band inputs are shown as gray / their first 3 bands
    return [overlay(img, m, min_side) for img, m in zip(channel_images(denormalize(batch, preprocessing)), maps)]


def explain_files(loaded, paths: Sequence[Union[str, Path]], class_indices: Sequence[int], batch_size: int = 16,
                  min_side: int = 224) -> List[Optional[Image.Image]]:
    """Overlays for image files (None where a file cannot be read), with the model's eval preprocessing."""
    from ..data.channels import load_image
    from ..data.decode import ImageDecodeError
    from ..data.transforms import Preprocessing, eval_transform

    model = getattr(loaded.model, "_orig_mod", loaded.model)  # torch.compile'd: hooks go on the plain model
    target_layer(model)  # a clear error before any file is read
    pre = Preprocessing.from_dict(loaded.preprocessing)
    tf = eval_transform(pre)
    out: List[Optional[Image.Image]] = [None] * len(paths)
    for start in range(0, len(paths), max(1, batch_size)):
        idx, tensors = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                tensors.append(tf(load_image(paths[i], pre.min_decode_size, channels=pre.channels)))
                idx.append(i)
            except (ImageDecodeError, OSError):
                continue
        if tensors:
            x = torch.stack(tensors).to(loaded.device)
            for i, im in zip(idx, explain_batch(model, x, [class_indices[i] for i in idx], loaded.preprocessing,
                                                min_side)):
                out[i] = im
    return out


# -- heat maps for report.html ---------------------------------------------------------------------
EXPLAIN_DIR = "explain"
INDEX = "index.json"
PER_CLASS = 2          # correct images explained per class
MAX_CLASSES = 40       # classes that get correct examples (more would bloat the report)


def report_selection(probs: np.ndarray, targets: np.ndarray, mistakes: int) -> List[tuple]:
    """(row, kind) to explain: the ``mistakes`` most confident mistakes (the report's gallery), then
    the PER_CLASS most confident correct images of each class (first MAX_CLASSES classes)."""
    from .metrics import most_confident_mistakes

    rows = [(i, "mistake") for i in most_confident_mistakes(probs, targets, mistakes)]
    preds, conf = probs.argmax(axis=1), probs.max(axis=1)
    for c in range(min(probs.shape[1], MAX_CLASSES)):
        right = np.flatnonzero((targets == c) & (preds == c))
        rows += [(int(i), "correct") for i in right[np.argsort(-conf[right], kind="stable")][:PER_CLASS]]
    return rows


def write_report_heatmaps(loaded, out: Path, paths: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                          classes: Sequence[str], mistakes: int) -> Optional[Path]:
    """Overlays (JPEG) of the predicted class for the images report.html shows, and ``index.json``
    mapping each image path to its overlay; None when the model cannot be explained here."""
    import json

    if not (available() and loaded.is_torch and hasattr(getattr(loaded.model, "_orig_mod", loaded.model), "levels")):
        return None
    chosen = report_selection(probs, targets, mistakes)
    preds = probs.argmax(axis=1)
    folder = Path(out) / EXPLAIN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    images = explain_files(loaded, [paths[i] for i, _ in chosen], [int(preds[i]) for i, _ in chosen], min_side=160)
    index = []
    for n, ((i, kind), im) in enumerate(zip(chosen, images)):
        if im is None:
            continue
        name = f"{n:03d}.jpg"
        im.save(folder / name, quality=85)
        index.append({"path": str(paths[i]), "kind": kind, "file": name, "true": classes[int(targets[i])],
                      "pred": classes[int(preds[i])], "prob": float(probs[i, preds[i]])})
    (folder / INDEX).write_text(json.dumps({"layer": "norm (final feature map, stride 32)", "images": index}, indent=1))
    return folder / INDEX


def _free_name(folder: Path, stem: str, taken: set, suffix: str = ".png") -> Path:
    """``stem + suffix`` in ``folder``, numbered when the name is taken (never overwrite a file)."""
    n, name = 1, f"{stem}{suffix}"
    while name in taken or (folder / name).exists():
        n += 1
        name = f"{stem}-{n}{suffix}"
    taken.add(name)
    return folder / name


def write_overlays(loaded, predictions, folder: Path) -> Path:
    """``fvt predict --explain DIR``: one overlay per prediction (heat map of its top class, even when
    the answer was 'unknown') as ``<image name>.<class>.cam.png``, and ``index.csv`` listing them."""
    import csv
    import re

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    idx = {c: i for i, c in enumerate(loaded.classes)}
    classes = [idx[p.topk[0][0]] for p in predictions]
    images = explain_files(loaded, [p.source for p in predictions], classes)
    taken: set = set()
    index = _free_name(folder, "index", taken, ".csv")
    with open(index, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "prob", "answer", "overlay"])
        for p, im in zip(predictions, images):
            top, prob = p.topk[0]
            stem = re.sub(r"[^\w.-]+", "_", f"{Path(p.source).stem}.{top}.cam")
            out = _free_name(folder, stem, taken) if im is not None else None
            if out is not None:
                im.save(out)
            w.writerow([p.source, top, f"{prob:.6f}", p.label, out.name if out else "(unreadable)"])
    return index
