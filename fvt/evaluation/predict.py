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
from ..data.channels import load_image
from ..data.decode import ImageDecodeError, geometry_problem, image_problem
from ..data.transforms import Preprocessing, eval_transform
from ..arguments import shown
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

    def __init__(self, paths: Sequence[Path], transform, min_size: int, channels: int = 3):
        self.paths, self.transform, self.min_size, self.channels = list(paths), transform, min_size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform(load_image(self.paths[i], self.min_size, channels=self.channels)), i, ""
        except (ImageDecodeError, OSError) as e:
            return None, i, str(e) or type(e).__name__


def _collate(items):
    ok = [it for it in items if it[0] is not None]
    x = torch.stack([it[0] for it in ok]) if ok else None
    return x, [it[1] for it in ok], [(it[1], it[2]) for it in items if it[0] is None]


def array_to_image(a: np.ndarray) -> Image.Image:
    """HWC / HW numpy image -> RGB PIL image: uint8 (or any integers in 0..255) as is, floats in 0..1
    scaled to 0..255; anything else is a UsageError (a float image in 0..255 would otherwise be taken
    for a saturated one). The image bounds of every input apply (raises ImageDecodeError)."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise UsageError(f"numpy image of shape {a.shape}: expected (H, W, 3), (H, W, 4) or (H, W) "
                         f"(channels last; transpose a (3, H, W) array first)")
    problem = geometry_problem(a.shape[1], a.shape[0])
    if problem:
        raise ImageDecodeError(problem)
    if a.dtype != np.uint8:
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise UsageError(f"numpy image of dtype {a.dtype}: give uint8 0..255 or floats in 0..1")
        if not np.isfinite(a).all():
            raise UsageError(f"numpy image of dtype {a.dtype} with NaN or inf values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if np.issubdtype(a.dtype, np.integer):
            if lo < 0 or hi > 255:
                raise UsageError(f"numpy image of dtype {a.dtype} with values {lo:g}..{hi:g}: give uint8 0..255 "
                                 f"(or floats in 0..1)")
            a = a.astype(np.uint8)
        elif lo < 0 or hi > 1:
            raise UsageError(f"float numpy image with values {lo:g}..{hi:g}: give floats in 0..1 (divide by 255) "
                             f"or uint8 0..255")
        else:
            a = np.clip(a.astype(np.float32) * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def array_to_bands(a: np.ndarray, channels: int) -> torch.Tensor:
    """(H, W, N) numpy image for an N-band model -> float tensor (N, H, W) (integers scaled by their range)."""
    from ..data.channels import bands_tensor

    if a.ndim != 3 or a.shape[-1] != channels:
        raise UsageError(f"numpy image of shape {a.shape}: this model takes (H, W, {channels}) (channels last)")
    problem = geometry_problem(a.shape[1], a.shape[0])
    if problem:
        raise ImageDecodeError(problem)
    return bands_tensor(a)


def split_inputs(images, function: str = "predict") -> list:
    """The inputs of one predict call as a list: one path / PIL image / numpy image / tensor image is one
    input; a 4-D array or tensor and a list or tuple are several. Anything else is a UsageError naming
    what is accepted."""
    if images is None or isinstance(images, (bytes, dict, set)) or isinstance(images, (int, float, bool)):
        raise UsageError(f"{function}: cannot predict {shown(images)}: give {ACCEPTED}, or a list of them")
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise UsageError(f"{function}: an array or tensor of shape {tuple(images.shape)} is not an image: give "
                         f"(H, W, 3) / (H, W) numpy images, (3, H, W) tensors, or a batch of them (4 dimensions)")
    if not isinstance(images, (list, tuple)):
        try:
            images = list(images)
        except TypeError:
            raise UsageError(f"{function}: cannot predict {type(images).__name__}: give {ACCEPTED}, or a list "
                             f"of them") from None
    bad = next((x for x in images if not isinstance(x, (str, Path, Image.Image, np.ndarray, torch.Tensor))), None)
    if bad is not None or any(isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim not in (2, 3) for x in images):
        what = type(bad).__name__ if bad is not None else "an array that is not one image"
        raise UsageError(f"{function}: a list item is {what}; each item must be {ACCEPTED}")
    return list(images)


@dataclass
class Prediction:
    label: str                          # most likely class
    prob: float                         # its probability
    topk: List[Tuple[str, float]]       # (label, probability), most likely first
    source: str = ""                    # path, or "<image i>" for in-memory input
    rejected: bool = False              # top probability below the reject threshold: label is "unknown"
    labels: Optional[List[str]] = None  # multi-label models: the predicted label set (probability >= threshold)
    probs: Optional[List[float]] = None  # multi-label models: every label's probability, in class order


class Classifier:
    """A loaded model plus its preprocessing; ``predict`` accepts any mix of inputs, batched."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 32, workers: int = 0,
                 amp_dtype: Optional[torch.dtype] = None, progress: bool = False,
                 reject: Union[None, str, float] = None, target_precision: Optional[float] = None, tta: str = "none"):
        from .abstain import resolve_reject

        self.loaded = loaded
        self.classes = loaded.classes
        self.task, self.thresholds = loaded.task, loaded.thresholds
        self.preprocessing = Preprocessing.from_dict(loaded.preprocessing)
        self.channels = self.preprocessing.channels
        self.transform = eval_transform(self.preprocessing)
        self.tta, self._tta_model = tta, None
        if tta != "none":  # a wrapper averages the probabilities of the views this transform makes
            from .tta import TTAModel, tta_transform

            self.transform = tta_transform(self.preprocessing, tta)
            self._tta_model = TTAModel(loaded.model, tta, loaded.task)
        if self.task == "multilabel" and reject is not None:
            raise UsageError("--reject abstains when a softmax's top class is unsure; a multi-label model answers a "
                             "label set by its per-label thresholds (leave --reject out)")
        self.batch_size = max(1, int(batch_size))
        self.workers = max(0, int(workers))
        self.amp_dtype = amp_dtype if loaded.is_torch else None
        self.progress = progress
        self.temperature = loaded.temperature
        # below this top probability the answer is "unknown" (None: always answer)
        self.reject_threshold = resolve_reject(loaded, reject, target_precision)

    @classmethod
    def from_checkpoint(cls, path: Union[str, Path], model: Optional[str] = None, ema: Optional[bool] = None,
                        device: Optional[str] = "auto", batch_size: Optional[int] = 32,
                        workers: Optional[int] = 0, reject: Union[None, str, float] = None,
                        target_precision: Optional[float] = None, tta: str = "none") -> "Classifier":
        """Any file fvt loads (checkpoint, safetensors, ONNX, OpenVINO, ...); an official
        checkpoint needs ``model=NAME``. ``ema``: None = the weights the run selected. ``reject``:
        None (always answer), ``"auto"`` (the threshold stored with the run, or re-chosen from its
        stored curve for ``target_precision``) or a probability. ``tta``: none, flip or crops
        (fvt.evaluation.tta). Tunes the process's allocator as fvt's commands do (:mod:`fvt.runtime`)."""
        from ..arguments import check_arguments

        if path is None:
            raise UsageError("Classifier.from_checkpoint(path=None): give the checkpoint or export file to use")
        check_arguments("Classifier.from_checkpoint", path=path, model=model, ema=ema, device=device,
                        batch_size=batch_size, workers=workers)
        tune_allocator()
        return cls(load_any(path, model_name=model, ema=ema, device=device or "auto"),
                   32 if batch_size is None else batch_size, workers or 0,
                   reject=reject, target_precision=target_precision, tta=tta)

    def _logits(self, batch: torch.Tensor) -> np.ndarray:
        from ..engine.evaluate import autocast_context

        with autocast_context(self.loaded.device, self.amp_dtype), torch.no_grad():
            out = self.loaded.logits(batch) if self._tta_model is None else \
                self._tta_model(batch.to(self.loaded.device)).float().cpu().numpy()
        if not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).any(axis=1).sum())
            raise CheckpointError(f"the model output is NaN or inf for {bad} of {len(out)} images: its weights or "
                                  f"its export are broken, so no prediction is given")
        return out

    def _probs(self, batch: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities: softmax of the logits divided by the run's temperature; a
        multi-label model: one sigmoid per label (its thresholds play the calibration's part)."""
        if self.task == "multilabel":
            from .multilabel_metrics import sigmoid

            return sigmoid(self._logits(batch))
        return softmax(self._logits(batch) / self.temperature)

    # -- inputs ------------------------------------------------------------------------
    def _to_tensor(self, item: ImageInput) -> torch.Tensor:
        from ..data.channels import to_channels

        if isinstance(item, torch.Tensor):
            if item.dtype == torch.uint8:
                if item.ndim != 3 or item.shape[0] not in (1, 3, 4, self.channels):
                    raise UsageError(f"a uint8 tensor of shape {tuple(item.shape)}: give ({self.channels}, H, W)")
                item = item.permute(1, 2, 0).cpu().numpy()
            else:
                return self._model_input(item)
        if isinstance(item, np.ndarray) and self.channels not in (1, 3):
            return self.transform(array_to_bands(item, self.channels))
        if isinstance(item, Image.Image):
            problem = image_problem(item)
            if problem:
                raise ImageDecodeError(problem)
        if isinstance(item, np.ndarray):
            item = array_to_image(item)
        if isinstance(item, Image.Image):
            return self.transform(to_channels(item, self.channels))
        if not isinstance(item, (str, Path)):
            raise UsageError(f"cannot predict a {type(item).__name__}: give {ACCEPTED}")
        return self.transform(load_image(item, self.preprocessing.min_decode_size, channels=self.channels))

    def _model_input(self, t: torch.Tensor) -> torch.Tensor:
        """A float tensor is taken as preprocessed model input: it must have the model's own shape."""
        want = (len(self.preprocessing.mean), *self.preprocessing.input_size)
        if not t.is_floating_point() or tuple(t.shape) != want:
            raise UsageError(f"a {t.dtype} tensor of shape {tuple(t.shape)}: a float tensor is taken as preprocessed "
                             f"model input and must be {want}; give a uint8 (3, H, W) tensor, a PIL image or a numpy "
                             f"image to have it resized and normalised")
        if not torch.isfinite(t).all():
            raise UsageError("a float tensor with NaN or inf values cannot be model input")
        return t.float()

    def _expand(self, images) -> List[Tuple[str, ImageInput]]:
        images = split_inputs(images, "Classifier.predict")
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

        ds = _Files(paths, self.transform, self.preprocessing.min_decode_size, self.channels)
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
        topk = check_topk(topk, len(self.classes))
        names = [n for n, _ in self._expand(images)]
        return self.to_predictions(names, self.predict_proba(images), topk)

    def to_predictions(self, names: Sequence[str], probs: np.ndarray, k: int) -> List[Prediction]:
        idx, p = top_k(probs, k)
        if self.task == "multilabel":  # a label set per image, decided by the per-label thresholds
            from .multilabel_metrics import predict_sets

            sets = [[c for c, on in zip(self.classes, row) if on] for row in predict_sets(probs, self.thresholds)]
            return [Prediction(self.classes[i[0]], float(q[0]), [(self.classes[j], float(v)) for j, v in zip(i, q)],
                               name, labels=labels, probs=[float(v) for v in row])
                    for name, i, q, labels, row in zip(names, idx, p, sets, probs)]
        out = []
        for name, i, q in zip(names, idx, p):
            rejected = self.reject_threshold is not None and float(q[0]) < self.reject_threshold
            out.append(Prediction(UNKNOWN if rejected else self.classes[i[0]], float(q[0]),
                                  [(self.classes[j], float(v)) for j, v in zip(i, q)], name, rejected))
        return out


# -- output rows ---------------------------------------------------------------------------
def prediction_row(source: str, pred: Optional[Prediction], error: str = "",
                   classes: Optional[Sequence[str]] = None) -> dict:
    """One output row, the schema every prediction output shares: ``fvt predict --output`` (JSON as is,
    CSV flattened), ``fvt serve``'s answers and so ``fvt predict --url``. ``pred`` None: the input
    could not be used and ``error`` says why. Multi-label predictions add ``labels`` (the set) and ``probs``
    (label -> probability; ``classes`` names them in order)."""
    row = {"path": source, "pred": pred.label if pred else None, "prob": pred.prob if pred else None,
           "topk": [{"label": lab, "prob": pr} for lab, pr in pred.topk] if pred else [],
           "error": error or None}
    if pred is not None and pred.labels is not None:  # multi-label: the label set and every label's probability
        row["labels"] = list(pred.labels)
        row["probs"] = dict(zip(classes or [lab for lab, _ in pred.topk], pred.probs or []))
    return row


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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"--topk {k!r}: give an integer of at least 1")
    return min(int(k), n_classes)
