"""Classify images with a trained model: ``fvt.Classifier`` and the ``fvt predict`` engine.

>>> clf = Classifier.from_checkpoint("runs/train/best.pt")   # or model.onnx / model.safetensors
>>> clf.predict(["rose.jpg", pil_image])[0].label

Images go through the checkpoint's own eval preprocessing (input size, crop_pct, mean/std,
interpolation). Probabilities are ``softmax(logits / T)`` with the temperature the run fitted
on its validation split (``LoadedModel.temperature``; 1.0 for an uncalibrated model). With a
``reject`` threshold, a prediction whose top probability is below it is labelled ``unknown``. Paths, PIL images, numpy arrays (H, W, 3) or (H, W) -- uint8 0..255 or float
0..1 -- and uint8 tensors (C, H, W) are raw images; float tensors are taken as already
preprocessed (C, H, W) or (N, C, H, W) model input. Files are decoded by a DataLoader
(``workers`` processes) and reported per file when they cannot be read."""

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
from ..errors import CheckpointError, DataError, UsageError
from ..runtime import tune_allocator
from .abstain import UNKNOWN
from .loading import LoadedModel, load_any
from .metrics import softmax, topk as top_k

ImageInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]
ACCEPTED = ("a path, a PIL image, a numpy array (H, W, 3) or (H, W) of uint8 0..255 or float 0..1, "
            "a uint8 tensor (3, H, W), or a float tensor already preprocessed")


class _Files(torch.utils.data.Dataset):
    """Decoded + preprocessed files; a file that cannot be read gives (None, index, why)."""

    def __init__(self, paths: Sequence[Path], transform, min_size: int):
        self.paths, self.transform, self.min_size = list(paths), transform, min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform(load_image(self.paths[i], self.min_size)), i, ""
        except (ImageDecodeError, OSError) as e:
            return None, i, str(e) or type(e).__name__


def _collate(items):
    ok = [it for it in items if it[0] is not None]
    x = torch.stack([it[0] for it in ok]) if ok else None
    return x, [it[1] for it in ok], [(it[1], it[2]) for it in items if it[0] is None]


def array_to_image(a: np.ndarray) -> Image.Image:
    """HWC / HW numpy image -> RGB PIL image (uint8 as is, float in 0..1 scaled to 0..255)."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise UsageError(f"numpy image of shape {a.shape}: expected (H, W, 3), (H, W, 4) or (H, W) "
                         f"(channels last; transpose a (3, H, W) array first)")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise UsageError(f"numpy image of dtype {a.dtype} with non-finite or non-numeric values")
        a = a.astype(np.float64)
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).round().astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


@dataclass
class Prediction:
    label: str                          # most likely class
    prob: float                         # its probability
    topk: List[Tuple[str, float]]       # (label, probability), most likely first
    source: str = ""                    # path, or "<image i>" for in-memory input
    rejected: bool = False              # top probability below the reject threshold: label is "unknown"


class Classifier:
    """A loaded model plus its preprocessing; ``predict`` accepts any mix of inputs, batched."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32, workers: int = 0,
                 amp_dtype: Optional[torch.dtype] = None, progress: bool = False,
                 reject: Union[None, str, float] = None, target_precision: Optional[float] = None):
        from .abstain import resolve_reject

        self.loaded = loaded
        self.classes = loaded.classes
        self.preprocessing = Preprocessing.from_dict(loaded.preprocessing)
        self.transform = eval_transform(self.preprocessing)
        self.batch_size = max(1, int(batch_size))
        self.workers = max(0, int(workers))
        self.amp_dtype = amp_dtype if loaded.is_torch else None
        self.progress = progress
        self.temperature = loaded.temperature
        # below this top probability the answer is "unknown" (None: always answer)
        self.reject_threshold = resolve_reject(loaded, reject, target_precision)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], model: Optional[str] = None, ema: Optional[bool] = None,
                        device: str = "auto", batch_size: int = 32, workers: int = 0,
                        reject: Union[None, str, float] = None,
                        target_precision: Optional[float] = None) -> "Classifier":
        """Any file fvt loads (checkpoint, safetensors, ONNX, OpenVINO, ...); an official
        checkpoint needs ``model=NAME``. ``ema``: None = the weights the run selected. ``reject``:
        None (always answer), ``"auto"`` (the threshold stored with the run, or re-chosen from its
        stored curve for ``target_precision``) or a probability. Tunes the process's allocator as
        fvt's commands do (:mod:`fvt.runtime`)."""
        tune_allocator()
        return cls(load_any(path, model_name=model, ema=ema, device=device), batch_size, workers,
                   reject=reject, target_precision=target_precision)

    def _logits(self, batch: torch.Tensor) -> np.ndarray:
        from ..engine.evaluate import autocast_context

        with autocast_context(self.loaded.device, self.amp_dtype):
            out = self.loaded.logits(batch)
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(axis=1).sum())
            raise CheckpointError(f"the model output is NaN or inf for {bad} of {len(out)} images: its weights or "
                                  f"its export are broken, so no prediction is given")
        return out

    def _probs(self, batch: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities: softmax of the logits divided by the run's temperature."""
        return softmax(self._logits(batch) / self.temperature)

    # -- inputs ------------------------------------------------------------------------
    def _to_tensor(self, item: ImageInput) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            if item.dtype == torch.uint8:
                return self.transform(Image.fromarray(item.permute(1, 2, 0).cpu().numpy()).convert("RGB"))
            return item.float()
        if isinstance(item, Image.Image):
            return self.transform(item.convert("RGB"))
        if isinstance(item, np.ndarray):
            return self.transform(array_to_image(item))
        if not isinstance(item, (str, Path)):
            raise UsageError(f"cannot predict a {type(item).__name__}: give {ACCEPTED}")
        return self.transform(load_image(item, self.preprocessing.min_decode_size))

    def _expand(self, images) -> List[Tuple[str, ImageInput]]:
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        elif isinstance(images, np.ndarray):
            images = [images] if images.ndim <= 3 else list(images)
        elif isinstance(images, torch.Tensor):
            images = [images] if images.ndim == 3 else list(images)
        return [(str(x) if isinstance(x, (str, Path)) else f"<image {i}>", x) for i, x in enumerate(images)]

    # -- prediction --------------------------------------------------------------------
    def predict_proba_safe(self, images) -> Tuple[List[str], np.ndarray, List[Tuple[str, str]]]:
        """(sources predicted, probabilities (N, C), [(source, why)] for inputs that failed)."""
        items = self._expand(images)
        if items and all(isinstance(x, (str, Path)) for _, x in items):
            return self._predict_files([Path(x) for _, x in items])
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
                probs.append(self._probs(torch.stack(tensors)))
                done.extend(names)
        out = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        return done, out, failed

    def _predict_files(self, paths: List[Path]):
        from tqdm.auto import tqdm

        ds = _Files(paths, self.transform, self.preprocessing.min_decode_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, num_workers=self.workers,
                                             collate_fn=_collate, shuffle=False)
        done, probs, failed = [], [], []
        bar = tqdm(total=len(ds), unit="img", desc="predict", disable=None if self.progress else True)
        for x, idx, bad in loader:
            failed.extend((str(paths[i]), why) for i, why in bad)
            if x is not None:
                probs.append(self._probs(x))
                done.extend(str(paths[i]) for i in idx)
            bar.update(len(idx) + len(bad))
        bar.close()
        return done, (np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))), failed

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
        out = []
        for name, i, q in zip(names, idx, p):
            rejected = self.reject_threshold is not None and float(q[0]) < self.reject_threshold
            out.append(Prediction(UNKNOWN if rejected else self.classes[i[0]], float(q[0]),
                                  [(self.classes[j], float(v)) for j, v in zip(i, q)], name, rejected))
        return out


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
