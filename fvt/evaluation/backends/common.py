"""What every inference backend shares: the metadata key and its parsing, the ``Runtime`` module
wrapping an engine, and the one-line error for a missing optional runtime. The backends import it;
``fvt.evaluation.backends`` (the dispatcher) imports the backends: imports run one way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ...errors import CheckpointError

META_KEY = "fvt"  # key of the JSON metadata in every export (ONNX props, safetensors header, ...)

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
        self._mean = np.asarray(pre.get("mean", (0, 0, 0)), np.float32).reshape(1, -1, 1, 1)  # one per channel
        self._std = np.asarray(pre.get("std", (1, 1, 1)), np.float32).reshape(1, -1, 1, 1)
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
