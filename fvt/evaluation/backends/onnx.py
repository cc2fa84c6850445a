"""ONNX: export (exporter, opset, dynamic axes, fp16, int8, simplification, normalisation inside the
graph) and inference with onnxruntime. The graph itself comes from ``onnx_graph`` (the dynamo exporter,
or the legacy one as its fallback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple

import numpy as np
import torch

from ...errors import CheckpointError, UsageError
from ..formats import DEFAULT_OPSET
from .common import META_KEY, Runtime, parse_meta, require
from .onnx_graph import GraphCheck, write_graph


class WithNormalize(torch.nn.Module):
    """Takes RGB in 0..255 (N, 3, H, W) and normalises inside the graph: a consumer only resizes."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.training = False  # an inference wrapper (exporters warn about modules in training mode)
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
                             / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def train(self, mode: bool = True):  # keep the wrapped model's eval-mode caches (see export._EvalPinned)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float() * self.scale - self.shift)


def session(path: Path, device: str = "cpu"):
    ort = require("onnxruntime", "running an ONNX file")
    wanted = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        wanted.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: graph-optimizer notes (e.g. fp16 MatMuls it cannot fold) are not
    try:
        return ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise CheckpointError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    sess = session(path, device)
    meta = parse_meta(sess.get_modelmeta().custom_metadata_map.get(META_KEY), path)
    name = sess.get_inputs()[0].name
    batch = sess.get_inputs()[0].shape[0]
    run = lambda a: sess.run(None, {name: a})[0]  # noqa: E731
    rt = Runtime("onnxruntime", run, meta, raw_rgb=meta.get("input") == "rgb255",
                 fixed_batch=batch if isinstance(batch, int) else None)
    rt.providers = sess.get_providers()
    return rt, meta


def _set_metadata(path: Path, meta: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta), "classes": json.dumps(meta["classes"]),
                                        "preprocessing": json.dumps(meta["preprocessing"]),
                                        "model_name": str(meta.get("model_name"))})
    if meta.get("precision") == "fp32":  # onnxruntime's fp16 converter leaves casts unsorted; ORT runs them
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def graph_check(meta: dict, check: Optional[Callable[[Runtime], Optional[str]]]) -> Optional[GraphCheck]:
    """``check`` applied to a freshly written graph (no fvt metadata in it yet), run by onnxruntime."""
    if check is None:
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # the OpenVINO export may run without onnxruntime: its own check judges the result
        return None

    def run_graph(path: Path) -> Optional[str]:
        sess = session(path, "cpu")
        run = lambda a: sess.run(None, {"input": a})[0]  # noqa: E731
        return check(Runtime("onnxruntime", run, meta, raw_rgb=meta.get("input") == "rgb255"))

    return run_graph


def _check_dynamic_hw(out: Path, example: torch.Tensor) -> None:
    """A model built for one input size may trace with symbolic H/W and still fail at another size."""
    sess = session(out, "cpu")
    h, w = example.shape[-2:]
    try:
        sess.run(None, {"input": np.zeros((1, example.shape[1], h * 2, w * 2), np.float32)})
    except Exception:
        out.unlink(missing_ok=True)
        raise UsageError(f"--dynamic: this model is built for {h}x{w} input (its attention windows and "
                         f"position biases are fixed at build time), so only the batch axis can be dynamic; "
                         f"drop --dynamic (the batch axis is always dynamic)") from None


def simplify(path: Path) -> None:
    onnxslim = require("onnxslim", "--simplify")
    import onnx

    from ..quiet import third_party

    with third_party():
        onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))


def to_half(path: Path) -> None:
    """fp16 weights and arithmetic; inputs and outputs stay float32 so consumers feed the same arrays."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from ..quiet import third_party

    with third_party():  # notes on values clamped to the fp16 range
        proto = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(proto, str(path))


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over batches of float32 images."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it = iter(batches)

    def get_next(self):
        a = next(self._it, None)
        return None if a is None else {"input": a}


def to_int8(path: Path, mode: str, calibration: Optional[Iterable[np.ndarray]]) -> None:
    """onnxruntime post-training quantization: ``dynamic`` (int8 weights, activations quantised
    on the fly) or ``static`` (QDQ, activation ranges from calibration images)."""
    from onnxruntime import quantization as q

    from ..quiet import third_party

    tmp = path.with_name(path.stem + ".fp32.onnx")
    path.replace(tmp)
    try:
        # the quantizer logs a line per tensor it keeps per-tensor (LayerNorm weights) and advice to
        # pre-process: held back unless quantization fails
        with third_party():
            if mode == "dynamic":
                q.quantize_dynamic(str(tmp), str(path), weight_type=q.QuantType.QInt8)
            else:
                if calibration is None:
                    raise UsageError("--int8 static needs calibration images: pass --data DIR "
                                     "(or export from a run whose validation split is present)")
                q.quantize_static(str(tmp), str(path), _Calibration(calibration), quant_format=q.QuantFormat.QDQ,
                                  per_channel=True, activation_type=q.QuantType.QUInt8,
                                  weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in path.parent.glob(path.stem + ".fp32*"):
            extra.unlink(missing_ok=True)


def export(model: torch.nn.Module, meta: dict, out: Path, example: torch.Tensor, opset: int = DEFAULT_OPSET,
           dynamic: bool = False, half: bool = False, int8: Optional[str] = None, simplify_graph: bool = False,
           with_normalize: bool = False, calibration=None, exporter: str = "auto",
           check: Optional[Callable[[Runtime], Optional[str]]] = None) -> dict:
    """Write ``out``; returns the metadata stored in it (precision, input convention and exporter included).
    ``check``: judges the fp32 graph run by onnxruntime (why it is wrong, or None) so ``auto`` can fall back."""
    require("onnx", "ONNX export")
    if half and int8:
        raise UsageError("--half and --int8 exclude each other; pick one precision")
    meta = dict(meta, precision="int8" if int8 else "fp16" if half else "fp32", opset=opset,
                input="rgb255" if with_normalize else "normalized")
    if with_normalize:
        pre = meta["preprocessing"]
        model = WithNormalize(model, pre["mean"], pre["std"])
        mean, std = (np.asarray(pre[k], np.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
        example = torch.from_numpy((example.numpy() * std + mean) * 255)
        if calibration is not None:
            calibration = ((a * std + mean) * 255 for a in calibration)
    used, note = write_graph(model, example, out, opset, dynamic, exporter, graph_check(meta, check))
    meta.update(exporter=used, **({"exporter_note": note} if note else {}))
    if dynamic:
        _check_dynamic_hw(out, example)
    if simplify_graph:
        simplify(out)
    if half:
        to_half(out)
    if int8:
        to_int8(out, int8, calibration)
    _set_metadata(out, meta)
    return meta
