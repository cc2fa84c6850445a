"""Classify images with a trained model: ``fvt.Classifier`` and the ``fvt predict`` engine.

>>> clf = Classifier.from_checkpoint("runs/train/best.pt")   # or model.onnx / model.safetensors
>>> clf.predict(["rose.jpg", pil_image])[0].label

Images go through the checkpoint's own eval preprocessing (input size, crop_pct, mean/std,
interpolation). Paths, PIL images and uint8 tensors (C, H, W) are raw images; float tensors
are taken as already preprocessed (C, H, W) or (N, C, H, W) model input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..data import expand_image_paths
from ..data.decode import ImageDecodeError, load_image
from ..data.transforms import Preprocessing, eval_transform
from ..errors import DataError, UsageError
from .loading import LoadedModel, load_any
from .metrics import softmax, topk as top_k

ImageInput = Union[str, Path, Image.Image, torch.Tensor]


@dataclass
class Prediction:
    label: str                          # most likely class
    prob: float                         # its probability
    topk: List[Tuple[str, float]]       # (label, probability), most likely first
    source: str = ""                    # path, or "<image i>" for in-memory input


class Classifier:
    """A loaded model plus its preprocessing; ``predict`` accepts any mix of inputs, batched."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32):
        self.loaded = loaded
        self.classes = loaded.classes
        self.preprocessing = Preprocessing.from_dict(loaded.preprocessing)
        self.transform = eval_transform(self.preprocessing)
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], model: Optional[str] = None, ema: bool = False,
                        device: str = "auto", batch_size: int = 32) -> "Classifier":
        """fvt checkpoint, ONNX or safetensors export; an official checkpoint needs ``model=NAME``."""
        return cls(load_any(path, model_name=model, ema=ema, device=device), batch_size)

    # -- inputs ------------------------------------------------------------------------
    def _to_tensor(self, item: ImageInput) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.uint8:
                return self.transform(Image.fromarray(item.permute(1, 2, 0).cpu().numpy()).convert("RGB"))
            return item.float()
        if isinstance(item, Image.Image):
            return self.transform(item.convert("RGB"))
        return self.transform(load_image(item, self.preprocessing.min_decode_size))

    def _expand(self, images) -> List[Tuple[str, ImageInput]]:
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        elif isinstance(images, torch.Tensor):
            images = [images] if images.ndim == 3 else list(images)
        return [(str(x) if isinstance(x, (str, Path)) else f"<image {i}>", x) for i, x in enumerate(images)]

    # -- prediction --------------------------------------------------------------------
    def predict_proba_safe(self, images) -> Tuple[List[str], np.ndarray, List[Tuple[str, str]]]:
        """(sources predicted, probabilities (N, C), [(source, why)] for inputs that failed)."""
        items = self._expand(images)
        done, probs, failed = [], [], []
        for start in range(0, len(items), self.batch_size):
            tensors, names = [], []
            for name, item in items[start:start + self.batch_size]:
                try:
                    tensors.append(self._to_tensor(item))
                    names.append(name)
                except (ImageDecodeError, OSError) as e:
                    failed.append((name, str(e) or type(e).__name__))
            if tensors:
                probs.append(softmax(self.loaded.logits(torch.stack(tensors))))
                done.extend(names)
        out = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        return done, out, failed

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (N, C) in the order of ``classes``; any unreadable input raises DataError."""
        _, probs, failed = self.predict_proba_safe(images)
        if failed:
            raise DataError(f"cannot read {failed[0][0]}: {failed[0][1]}")
        return probs

    def predict(self, images, topk: int = 5) -> List[Prediction]:
        """One ``Prediction`` per input (a single input also gives a list of one)."""
        names = [n for n, _ in self._expand(images)]
        return self.to_predictions(names, self.predict_proba(images), topk)

    def to_predictions(self, names: Sequence[str], probs: np.ndarray, k: int) -> List[Prediction]:
        idx, p = top_k(probs, k)
        return [Prediction(self.classes[i[0]], float(q[0]),
                           [(self.classes[j], float(v)) for j, v in zip(i, q)], name)
                for name, i, q in zip(names, idx, p)]


def expand_paths(patterns: Iterable[str]) -> Tuple[List[Path], List[str]]:
    """Files, folders (searched recursively for images) and globs -> (files, patterns that matched nothing).

    A pattern that matches nothing is reported, not fatal: the rest is still predicted."""
    files, unmatched = [], []
    for pat in patterns:
        try:
            found = expand_image_paths([pat])
        except DataError:
            found = []
        if not found:
            unmatched.append(pat)
        files.extend(found)
    return list(dict.fromkeys(files)), unmatched  # the same file given twice is predicted once


def check_topk(k: int, n_classes: int) -> int:
    if k < 1:
        raise UsageError(f"--topk {k}: must be at least 1")
    return min(k, n_classes)
