"""CoreML (.mlpackage) through coremltools: conversion and a spec check run anywhere;
running the model needs macOS (coremltools' runtime is not built for Linux)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Tuple

import torch

from ...errors import CheckpointError, UsageError
from ..quiet import third_party
from .common import META_KEY, Runtime, parse_meta, require

CAN_RUN = platform.system() == "Darwin"
NO_RUN_REASON = "coremltools runs models on macOS only; this is " + platform.system()


def export(model: torch.nn.Module, meta: dict, out: Path, example: torch.Tensor, precision: str = "fp16") -> dict:
    """torch.export, convert to an ML program (fp16 or fp32 compute), store the metadata, check the spec."""
    if precision not in ("fp32", "fp16"):
        raise UsageError(f"CoreML export: precision {precision} is not supported; use fp32 or --half")
    ct = _coremltools("CoreML export")
    try:
        # coremltools' progress bars and notes are held back; a failure is reported below, in one line
        with third_party(replay=False):
            # torch.export rather than a TorchScript trace: coremltools cannot read the traced
            # graph's shape arithmetic with recent torch, the exported program converts cleanly.
            program = torch.export.export(model, (example[:1],)).run_decompositions({})
            mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.macOS13,
                                 compute_precision=ct.precision.FLOAT16 if precision == "fp16"
                                 else ct.precision.FLOAT32)
    except Exception as e:  # coremltools raises many types for unsupported graphs
        raise UsageError(f"coremltools {ct.__version__} cannot convert this model "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    spec = mlmodel.get_spec()
    io = [spec.description.input[0].name, spec.description.output[0].name]
    meta = dict(meta, precision=precision, input="normalized", batch=1, coreml_io=io)
    mlmodel.user_defined_metadata[META_KEY] = json.dumps(meta)
    mlmodel.short_description = f"{meta.get('model_name')} image classifier ({len(meta['classes'])} classes), fvt"
    mlmodel.save(str(out))
    check_spec(out, example[:1].shape, len(meta["classes"]))
    return meta


def _coremltools(why: str):
    """coremltools, imported without its import-time notices (unsupported scikit-learn / torch versions,
    "Failed to load _MLModelProxy" on every system but macOS), which say nothing about fvt's use of it."""
    with third_party():
        return require("coremltools", why)


def check_spec(path: Path, input_shape, num_classes: int) -> None:
    """Reload the package and check its declared input shape, output and metadata."""
    ct = _coremltools("reading a CoreML model")
    spec = ct.utils.load_spec(str(path))
    meta = parse_meta(spec.description.metadata.userDefined.get(META_KEY), path)
    in_name, out_name = meta["coreml_io"]
    ins = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    outs = {o.name for o in spec.description.output}
    if ins.get(in_name) != list(input_shape) or outs != {out_name}:
        raise CheckpointError(f"{path}: CoreML spec check failed (inputs {ins}, outputs {sorted(outs)})")
    if len(meta["classes"]) != num_classes:
        raise CheckpointError(f"{path}: CoreML metadata holds {len(meta['classes'])} classes, expected {num_classes}")


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    ct = _coremltools("running a CoreML model")
    if not CAN_RUN:
        raise UsageError(f"cannot run {path.name} here: {NO_RUN_REASON}; score the ONNX or OpenVINO export instead")
    mlmodel = ct.models.MLModel(str(path))
    meta = parse_meta(mlmodel.user_defined_metadata.get(META_KEY), path)

    def run(a):
        return mlmodel.predict({meta["coreml_io"][0]: a})[meta["coreml_io"][1]]

    return Runtime("coreml", run, meta, fixed_batch=1), meta
