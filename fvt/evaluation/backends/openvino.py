"""OpenVINO IR (NAME.xml + NAME.bin): export through the ONNX graph (fp32, fp16 weights, or
int8 by NNCF post-training quantization with calibration images) and inference on the CPU."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Tuple

import numpy as np
import torch

from ...errors import CheckpointError, UsageError
from .common import META_KEY, Runtime, parse_meta, require


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    ov = require("openvino", "running an OpenVINO IR file")
    if not path.with_suffix(".bin").is_file():
        raise CheckpointError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing beside it")
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as e:  # OpenVINO raises RuntimeError subclasses with multi-line text
        raise CheckpointError(f"{path}: not a readable OpenVINO IR ({str(e).splitlines()[0][:200]})") from None
    text = model.get_rt_info([META_KEY]).astype(str) if model.has_rt_info([META_KEY]) else None
    meta = parse_meta(text, path)
    # An fp32 IR runs in fp32: the CPU plugin would otherwise pick bf16 on CPUs that have it.
    config = {"INFERENCE_PRECISION_HINT": "f32"} if meta.get("precision", "fp32") == "fp32" else {}
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(a: np.ndarray) -> np.ndarray:
        return np.array(request.infer({0: a})[compiled.output(0)])

    return Runtime("openvino", run, meta, raw_rgb=meta.get("input") == "rgb255"), meta


def export(onnx_file: Path, meta: dict, out: Path, precision: str = "fp32",
           calibration: Optional[Iterable[np.ndarray]] = None) -> dict:
    """Convert an fp32 ONNX file (made by the caller) to IR at ``out`` (.xml, with .bin beside it)."""
    from ..quiet import third_party

    ov = require("openvino", "OpenVINO export")
    model = ov.convert_model(str(onnx_file))
    if precision == "int8":
        if calibration is None:
            raise UsageError("OpenVINO --int8 needs calibration images: pass --data DIR "
                             "(or export from a run whose validation split is present)")
        batches = list(calibration)
        with third_party():  # NNCF's import notices and progress bars
            nncf = require("nncf", "OpenVINO int8 export")
            # NNCF's default (CNN) scheme, not model_type=TRANSFORMER: on FasterViT the transformer scheme
            # (SmoothQuant and int8 attention matmuls) kept only 71% top-1 agreement with float32 on flowers,
            # the default scheme 99% and the float top-1 (docs/export.md, "Int8 accuracy on flowers").
            model = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    meta = dict(meta, precision=precision, input=meta.get("input", "normalized"))
    model.set_rt_info(json.dumps(meta), [META_KEY])
    ov.save_model(model, str(out), compress_to_fp16=(precision == "fp16"))
    return meta


def export_from_torch(model: torch.nn.Module, meta: dict, out: Path, example: torch.Tensor, precision: str,
                      calibration=None, exporter: str = "auto", check=None) -> dict:
    """Through an fp32 ONNX graph (``onnx_graph``: the dynamo exporter, or the legacy one as fallback);
    ``check`` judges that graph run by onnxruntime, where installed (see ``onnx.export``)."""
    from ..formats import DEFAULT_OPSET
    from .onnx import graph_check
    from .onnx_graph import write_graph

    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        used, note = write_graph(model, example, onnx_file, DEFAULT_OPSET, False, exporter,
                                 graph_check(dict(meta, input="normalized"), check))
        meta = dict(meta, exporter=used, **({"exporter_note": note} if note else {}))
        return export(onnx_file, meta, out, precision, calibration)
