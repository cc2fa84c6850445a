"""``fvt bench --backend ...``: one model, several inference backends, side by side.

Each backend runs the same fvt model (random weights: speed does not depend on them):
eager PyTorch, torch.compile, onnxruntime (the dynamo-exported graph, or ``-legacy`` for the
TorchScript-based exporter's; ``-int8``), OpenVINO (float32, or ``-fp16`` / ``-int8``), the
torch.export ExportedProgram run by PyTorch (``torch-export``), an AOTInductor package
(``aoti``, compiled for the CPU), a traced TorchScript module (``torchscript``, legacy), TensorRT on a GPU, and the official ``fastervit``
implementation in eager PyTorch where the variant is an official one. Latency p50/p90 at batch 1,
throughput at batch N. What the converters print while the backends are built is held back
(``quiet``), so the table stays a table."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

from ..errors import FvtError, UsageError
from .quiet import third_party

BACKENDS = ("torch", "compile", "torch-export", "aoti", "onnxruntime", "onnxruntime-legacy", "onnxruntime-int8",
            "openvino", "openvino-fp16", "openvino-int8", "torchscript", "tensorrt", "official")


def _meta(model, hw) -> dict:
    return {"model_name": model.model_name, "model_kwargs": model.model_kwargs,
            "classes": [str(i) for i in range(model.num_classes)],
            "preprocessing": {"input_size": list(hw), "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def _official(model: torch.nn.Module) -> Callable:
    """The official implementation of the same variant, built without leaving timm's names pointing at it."""
    if not getattr(model, "pretrained_cfg", {}).get("official", True):  # before importing fastervit at all
        raise UsageError(f"{model.model_name} is not an official FasterViT variant")
    from ..extras import require
    from ..models import timm_models

    with third_party():  # its import re-registers 30+ timm names, each with a warning
        require("fastervit", "official", "--backend official")
        import fastervit.models.faster_vit as off
        import fastervit.models.faster_vit_any_res as off_any
    with third_party():  # timm's plain names back to fvt's models for the rest of the process
        timm_models.reclaim_plain_names()
    build = getattr(off_any if model.model_name.endswith("any_res") else off, model.model_name)
    with third_party():
        official = build(pretrained=False).eval()
    return torch.inference_mode()(lambda x: official(x))


def _runner(name: str, model: torch.nn.Module, hw, tmp: Path) -> Callable:
    from .backends import onnx as onnx_backend
    from .export import _EvalPinned

    example = torch.randn(2, 3, *hw)
    pinned = _EvalPinned(model)
    calib = [np.random.default_rng(i).standard_normal((4, 3, *hw)).astype(np.float32) for i in range(2)]
    if name == "torch":
        return torch.inference_mode()(lambda x: model(x))
    if name == "compile":
        compiled = torch.compile(model)
        return torch.inference_mode()(lambda x: compiled(x))
    if name == "torch-export":
        from .backends.torch_export import export_program

        with third_party():
            program = export_program(pinned, example).module()
        return torch.inference_mode()(lambda x: program(x))
    if name == "aoti":
        from .backends import aoti

        out = tmp / "aoti.pt2"
        aoti.export(pinned, _meta(model, hw), out, example, "cpu")
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(out))
        return torch.inference_mode()(lambda x: runner(x))
    if name == "torchscript":  # legacy, for comparison
        import warnings

        with warnings.catch_warnings():  # torch.jit's deprecation notice
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(pinned, example, check_trace=False)
        return torch.inference_mode()(lambda x: traced(x))
    if name.startswith("onnxruntime"):
        out = tmp / f"{name}.onnx"
        onnx_backend.export(pinned, _meta(model, hw), out, example, int8="dynamic" if name.endswith("int8") else None,
                            exporter="legacy" if name.endswith("legacy") else "auto")
        rt, meta = onnx_backend.load(out, "cpu")
        rt.note = f"{meta.get('exporter')} exporter"  # which graph was timed
        return rt
    if name.startswith("openvino"):
        from .backends import openvino

        precision = name.split("-")[1] if "-" in name else "fp32"
        out = tmp / f"{name}.xml"
        openvino.export_from_torch(pinned, _meta(model, hw), out, example, precision, calib)
        rt, _ = openvino.load(out, "cpu")
        return rt
    if name == "tensorrt":
        from .backends import tensorrt

        tensorrt._need_gpu("--backend tensorrt")  # UNTESTED: no GPU where this was written
        out = tmp / f"{name}.ts"
        tensorrt.export(pinned, _meta(model, hw), out, example, "fp16")
        rt, _ = tensorrt.load(out, "cuda")
        return rt
    if name == "official":
        return _official(model)
    raise UsageError(f"--backend {name}: use one of {', '.join(BACKENDS)}")


def bench_backends(model_name: str, backends: List[str], img_size=None, batch: int = 32, steps: int = 20,
                   warmup: int = 3, log=print) -> List[Dict]:
    """One row per backend: p50_ms, p90_ms, img_per_s, or ``error`` when it cannot run here."""
    from ..models import create_model
    from ..models.speed import latency_throughput

    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise UsageError(f"--backend {bad[0]}: use one of {', '.join(BACKENDS)}")
    model = create_model(model_name, img_size=img_size, num_classes=1000).eval()
    hw = tuple(model.img_size)
    with torch.no_grad():
        model(torch.zeros(1, 3, *hw))  # fill the eval caches before any tracing
    rows = []
    # No global no_grad: the ONNX tracer must see weights as initializers (int8 quantization needs that).
    with tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            try:
                fn = _runner(name, model, hw, Path(tmp))
                row = latency_throughput(fn, lambda n: torch.randn(n, 3, *hw), batch, steps, warmup)
                if getattr(fn, "note", None):
                    row["note"] = fn.note
            except (FvtError, ImportError) as e:
                row = {"error": str(e)}
            rows.append({"backend": name, **row})
            log(format_row(rows[-1]))
    return rows


def format_row(r: Dict) -> str:
    if "error" in r:
        return f"{r['backend']:<18} not run: {r['error']}"
    note = f"  ({r['note']})" if r.get("note") else ""
    return f"{r['backend']:<18} {r['p50_ms']:>9.2f} {r['p90_ms']:>9.2f} {r['img_per_s']:>10.1f}{note}"


HEADER = f"{'backend':<18} {'p50 ms':>9} {'p90 ms':>9} {'img/s':>10}"
