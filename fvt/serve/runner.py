"""The served model: bytes -> preprocessed tensor, a batch of tensors -> probabilities, -> rows.

Everything goes through what ``fvt predict`` uses: ``load_any`` for the file (checkpoint or any
export), ``fvt.data.channels.load_image`` for the bytes (its guards against decompression bombs,
extreme aspect ratios and non-images), the checkpoint's own eval transform, ``Classifier`` for
the forward (temperature, rejection threshold) and ``prediction_row`` for the answer's schema."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from .. import __version__
from ..data.channels import load_image
from ..data.decode import ImageDecodeError
from ..evaluation.abstain import UNKNOWN
from ..evaluation.loading import LoadedModel, load_any
from ..evaluation.predict import Classifier, prediction_row
from .options import ServeOptions

_STREAM_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class BadImage(Exception):
    """Bytes that cannot be used as an image; the message says why (one line)."""


def fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """The first 12 hex digits of the SHA-256 of the model's file(s): the version a client sees."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():  # OpenVINO: graph + weights
        files.append(path.with_suffix(".bin"))
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()[:12]


def reject_setting(loaded: LoadedModel, options: ServeOptions) -> Optional[str]:
    """What ``Classifier(reject=...)`` gets: ``--reject`` when given, else the model's own threshold when it
    carries one (``unknown`` below it, as ``fvt predict --reject auto``), else none."""
    if options.reject is not None:
        return None if options.reject == "none" else options.reject
    if loaded.reject_threshold is None or UNKNOWN in loaded.classes:  # a class named "unknown": no silent clash
        return None
    return "auto"


class ModelRunner:
    """One loaded model and what the server needs from it. ``infer`` runs on one thread at a time
    (the batcher's); ``decode`` may run on many."""

    def __init__(self, loaded: LoadedModel, options: ServeOptions, amp_dtype=None):
        self.loaded, self.options = loaded, options
        self.clf = Classifier(loaded, batch_size=options.max_batch, workers=0, amp_dtype=amp_dtype,
                              reject=reject_setting(loaded, options), target_precision=options.target_precision)
        self.classes: List[str] = list(self.clf.classes)
        source = Path(loaded.info.get("source", options.checkpoint))
        self.version = fingerprint(source) if source.exists() else "unknown"
        self.identity = {"name": loaded.model_name or source.stem, "version": self.version, "classes": self.classes}

    @classmethod
    def load(cls, options: ServeOptions) -> "ModelRunner":
        """Load ``options.checkpoint`` (CheckpointError/UsageError: one line naming the file)."""
        from ..engine.precision import resolve_amp

        loaded = load_any(options.checkpoint, model_name=options.model, ema=options.ema, device=options.device)
        amp = resolve_amp(options.amp, loaded.device) if loaded.is_torch else None
        return cls(loaded, options, amp)

    def decode(self, data: bytes) -> torch.Tensor:
        """Image file bytes -> the model's preprocessed input (C, H, W); BadImage when they are not one."""
        try:
            pre = self.clf.preprocessing  # decoded for the model's channels, as fvt predict does
            image = load_image(io.BytesIO(data), pre.min_decode_size, channels=pre.channels)
            return self.clf.transform(image)
        except ImageDecodeError as e:
            why = str(e)
            if why.startswith("cannot identify image file"):  # Pillow names the stream object, not the file
                why = "not an image (no format Pillow can read)"
            raise BadImage(_STREAM_REPR.sub("the upload", why)) from None
        except Exception as e:  # noqa: BLE001 - whatever one upload triggers is that upload's problem
            raise BadImage(f"cannot preprocess it ({type(e).__name__}: {str(e)[:200]})") from None

    def infer(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        """Preprocessed images -> class probabilities (N, C), one forward pass (up to max_batch)."""
        return self.clf.predict_proba(torch.stack(list(batch)))

    def rows(self, names: Sequence[str], probs: np.ndarray, k: int) -> List[dict]:
        return [prediction_row(p.source, p, classes=self.clf.classes) for p in self.clf.to_predictions(names, probs, k)]

    def warm_up(self) -> None:
        """One forward at batch 1 and one at max_batch: the first calls allocate and pick kernels."""
        pre = self.clf.preprocessing  # the mean image, already preprocessed: any channel count
        mean = torch.zeros(pre.channels, *pre.input_size)
        for n in sorted({1, self.options.max_batch}):
            self.infer([mean] * n)

    def describe(self) -> dict:
        """GET /v1/model: what a client needs to know about the model and the server's limits."""
        o, loaded = self.options, self.loaded
        return {**self.identity, "fvt_version": __version__, "kind": loaded.kind, "backend": loaded.backend,
                "weights": loaded.info.get("weights", "raw"), "precision": loaded.info.get("precision", "fp32"),
                "file": Path(loaded.info.get("source", o.checkpoint)).name,
                "preprocessing": dict(loaded.preprocessing),
                "reject_threshold": self.clf.reject_threshold, "temperature": self.clf.temperature,
                "topk_default": min(o.topk, len(self.classes)),
                "batching": {"max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms},
                "limits": {"max_body_bytes": o.max_body_bytes, "max_images": o.max_images, "timeout_s": o.timeout_s}}
