"""Inference backends: every deployment format behind one call convention.

``load_backend(path)`` returns a :class:`Runtime` for an exported file: an ``nn.Module``
whose forward takes the fvt-preprocessed float batch (N, 3, H, W) and returns float32
logits, plus the metadata (classes, preprocessing) the export carries. fvt eval / predict
therefore run an ONNX, OpenVINO, torch.export (.pt2), AOTInductor (.pt2), TensorRT, CoreML or
TorchScript file exactly as they run PyTorch weights (``fvt.evaluation.loading`` handles the
PyTorch files themselves).

The heavy runtimes are optional extras; a missing one is one line naming the extra."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ...errors import CheckpointError, UsageError

META_KEY = "fvt"  # key of the JSON metadata in every export (ONNX props, safetensors header, ...)

# suffix -> (format, backend module); folders are timm-folder exports, other files torch checkpoints
SUFFIX_FORMAT = {".onnx": "onnx", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt",
                 ".mlpackage": "coreml", ".mlmodel": "coreml", ".safetensors": "safetensors"}
EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "onnxslim": "onnx", "onnxscript": "onnx", "openvino": "openvino", "nncf": "openvino",
          "coremltools": "coreml", "tensorrt": "tensorrt", "torch_tensorrt": "tensorrt"}


def require(module: str, why: str):
    """Import an optional dependency or fail with one line naming the pip extra (fvt.extras)."""
    from ...extras import require as require_extra

    return require_extra(module, EXTRAS.get(module, module), why)


class Runtime(torch.nn.Module):
    """An inference engine behind the ``nn.Module`` call convention.

    ``run`` maps a float32 numpy batch to logits. ``raw_rgb``: the graph normalises inside
    (exported ``--with-normalize``) and takes RGB in 0..255, so fvt's normalised batches are
    mapped back first with the export's own mean/std."""

    def __init__(self, backend: str, run: Callable[[np.ndarray], np.ndarray], meta: dict,
                 raw_rgb: bool = False, fixed_batch: Optional[int] = None):
        super().__init__()
        self.backend = backend
        self._run = run
        self.meta = meta
        self.fixed_batch = fixed_batch
        pre = meta.get("preprocessing", {})
        self._mean = np.asarray(pre.get("mean", (0, 0, 0)), np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(pre.get("std", (1, 1, 1)), np.float32).reshape(1, 3, 1, 1)
        self.raw_rgb = raw_rgb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().float().cpu().numpy()
        if self.raw_rgb:
            a = (a * self._std + self._mean) * 255.0
        if self.fixed_batch and a.shape[0] != self.fixed_batch:  # static-batch engines: run in slices
            outs = [self._run_padded(a[i:i + self.fixed_batch]) for i in range(0, a.shape[0], self.fixed_batch)]
            return torch.from_numpy(np.concatenate(outs))
        return torch.from_numpy(np.ascontiguousarray(self._run(np.ascontiguousarray(a)), dtype=np.float32))

    def _run_padded(self, a: np.ndarray) -> np.ndarray:
        n = a.shape[0]
        if n < self.fixed_batch:
            a = np.concatenate([a, np.zeros((self.fixed_batch - n, *a.shape[1:]), a.dtype)])
        return np.asarray(self._run(np.ascontiguousarray(a)), np.float32)[:n]


def detect_format(path: Path) -> str:
    """onnx | openvino | torch-export | aoti | tensorrt | coreml | safetensors | timm-folder | torchscript
    | checkpoint."""
    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt:
        return fmt
    if path.suffix.lower() == ".pt2" and path.is_file():
        from .torch_export import pt2_kind

        return pt2_kind(path)
    if path.is_dir():
        return "timm-folder" if (path / "config.json").is_file() else "folder"
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist()):
                    return "torchscript"
    except OSError:
        pass
    return "checkpoint"


def parse_meta(text: Optional[str], path: Path) -> dict:
    """The fvt metadata JSON of an export, checked for what inference needs."""
    if not text:
        raise CheckpointError(f"{path}: no fvt metadata (classes, preprocessing); export it with `fvt export`")
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{path}: fvt metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list) or not meta["classes"] \
            or not isinstance(meta.get("preprocessing"), dict):
        raise CheckpointError(f"{path}: fvt metadata lacks a class list or preprocessing")
    return meta


def load_backend(path: Path, fmt: str, device: str = "auto") -> Tuple[Runtime, dict]:
    """(runtime, metadata) for an exported file of format ``fmt`` (see ``detect_format``)."""
    if fmt == "onnx":
        from .onnx import load
    elif fmt == "openvino":
        from .openvino import load
    elif fmt == "tensorrt":
        from .tensorrt import load
    elif fmt == "coreml":
        from .coreml import load
    elif fmt == "torchscript":
        from .torchscript import load
    elif fmt == "torch-export":
        from .torch_export import load
    elif fmt == "aoti":
        from .aoti import load
    else:
        raise UsageError(f"{path}: no inference backend for format {fmt!r}")
    return load(path, device)
