"""TensorRT engines (fp16 / int8) through torch-tensorrt, built from the ONNX graph.

UNTESTED: no GPU was available where this was written. Without a CUDA device the export and
the loader refuse with one line; the code path runs only where torch-tensorrt imports and
CUDA is present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from ...errors import UsageError
from .common import META_KEY, Runtime, parse_meta, require


def _need_gpu(what: str) -> None:
    if not torch.cuda.is_available():
        raise UsageError(f"{what} needs an NVIDIA GPU with CUDA, and this machine has none; "
                         f"export --format onnx or openvino for CPU deployment")


OPT_BATCH, MAX_BATCH = 32, 64  # the engine is tuned for batch 32 and accepts 1..64 (larger inputs run in slices)


def export(model: torch.nn.Module, meta: dict, out: Path, example: torch.Tensor, precision: str = "fp16") -> dict:
    """Compile with torch-tensorrt and save a TorchScript-wrapped engine with the metadata beside it."""
    _need_gpu("a TensorRT export")
    trt = require("torch_tensorrt", "TensorRT export")
    dtypes = {"fp32": {torch.float32}, "fp16": {torch.float16, torch.float32}, "int8": {torch.int8, torch.float16}}
    model = model.cuda().eval()
    chw = tuple(example.shape[1:])
    # A dynamic batch axis: an engine built for the tracing example's batch alone would refuse any other.
    shape = trt.Input(min_shape=(1, *chw), opt_shape=(OPT_BATCH, *chw), max_shape=(MAX_BATCH, *chw),
                      dtype=torch.float32)
    compiled = trt.compile(model, ir="ts", inputs=[shape], enabled_precisions=dtypes[precision])
    meta = dict(meta, precision=precision, input="normalized", max_batch=MAX_BATCH)
    torch.jit.save(compiled, str(out), _extra_files={f"{META_KEY}.json": json.dumps(meta)})
    return meta


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    _need_gpu(f"running the TensorRT engine {path.name}")
    require("torch_tensorrt", "running a TensorRT engine")
    extra = {f"{META_KEY}.json": ""}
    module = torch.jit.load(str(path), map_location="cuda", _extra_files=extra)
    meta = parse_meta(extra[f"{META_KEY}.json"], path)
    batch = int(meta.get("batch", 0)) or None  # a static-batch engine
    most = int(meta.get("max_batch", 0)) or None

    def run(a):
        with torch.no_grad():
            if most and a.shape[0] > most:
                return np.concatenate([run(a[i:i + most]) for i in range(0, a.shape[0], most)])
            return module(torch.from_numpy(np.ascontiguousarray(a)).cuda()).float().cpu().numpy()

    return Runtime("tensorrt", run, meta, fixed_batch=batch), meta
