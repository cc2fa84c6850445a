"""Export a trained model for deployment: ONNX, safetensors (+ JSON sidecar), TorchScript.

Each export carries what a user of the file needs without fvt's training state: the class
names, the eval preprocessing and the model name/arguments. ONNX and TorchScript exports are
checked against PyTorch in the same call; a difference above ``TOLERANCE`` fails the export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from ..errors import CheckpointError, UsageError
from .loading import META_KEY, LoadedModel

TOLERANCE = 1e-4  # max abs logit difference allowed in float32
FORMATS = ("onnx", "safetensors", "torchscript")
SUFFIX = {"onnx": ".onnx", "safetensors": ".safetensors", "torchscript": ".pt"}


class ExportCheckFailed(CheckpointError):
    """The exported file does not reproduce PyTorch's logits."""


def _example(loaded: LoadedModel, batch: int, seed: int = 0) -> torch.Tensor:
    h, w = loaded.preprocessing["input_size"]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, int(h), int(w), generator=g)


@torch.no_grad()
def _reference(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return model(x).float().numpy()


def _cpu_model(loaded: LoadedModel) -> torch.nn.Module:
    if loaded.model is None:
        raise UsageError("export needs PyTorch weights (an fvt checkpoint or safetensors), not an ONNX file")
    return loaded.model.float().cpu().eval()


def _traceable(loaded: LoadedModel) -> torch.nn.Module:
    model = _cpu_model(loaded)
    # One eval forward fills the model's cached position biases, so the tracer records them as
    # constants instead of the in-place cache update (which has no ONNX equivalent).
    with torch.no_grad():
        model(_example(loaded, 1))
    return _EvalPinned(model)


class _EvalPinned(torch.nn.Module):
    """Keeps the wrapped model in eval mode: exporters call ``.train(False)``, which would
    reset the model's bias cache and put the in-place update back into the trace."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def train(self, mode: bool = True):
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_onnx(loaded: LoadedModel, out: Path, opset: int = 17) -> float:
    """Write ``out`` (dynamic batch axis, fvt metadata) and return the max abs logit difference
    between onnxruntime and PyTorch on batches of 1 and 3."""
    from ..extras import require

    onnx = require("onnx", "onnx", "ONNX export")
    ort = require("onnxruntime", "onnx", "ONNX export (checked with onnxruntime)")
    model = _traceable(loaded)
    x = _example(loaded, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(model, (x,), str(out), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(out))
    meta = loaded.metadata()
    props = {META_KEY: json.dumps(meta), "classes": json.dumps(meta["classes"]),
             "preprocessing": json.dumps(meta["preprocessing"]), "model_name": str(meta["model_name"])}
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    diff = 0.0
    for batch in (1, 3):  # a batch size other than the traced one proves the axis is dynamic
        xb = _example(loaded, batch, seed=batch)
        got = sess.run(None, {"input": xb.numpy()})[0]
        diff = max(diff, float(np.abs(got - _reference(model, xb)).max()))
    return diff


def export_safetensors(loaded: LoadedModel, out: Path) -> Path:
    """Weights as safetensors (metadata in the header too) and a JSON sidecar next to them."""
    from safetensors.torch import save_file

    model = _cpu_model(loaded)
    # safetensors refuses shared storage: give every tensor its own contiguous copy.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    meta = loaded.metadata()
    save_file(state, str(out), metadata={META_KEY: json.dumps(meta)})
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2))
    return sidecar


def export_torchscript(loaded: LoadedModel, out: Path) -> float:
    """A traced TorchScript module with the metadata as the extra file ``fvt.json``; returns
    the max abs logit difference of the reloaded module against PyTorch at batch 3."""
    model = _traceable(loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(loaded, 2), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"fvt.json": json.dumps(loaded.metadata())})
        reloaded = torch.jit.load(str(out))
    xb = _example(loaded, 3, seed=3)
    with torch.no_grad():
        return float(np.abs(reloaded(xb).float().numpy() - _reference(model, xb)).max())


def export(loaded: LoadedModel, fmt: str, out: Path) -> Tuple[Path, dict]:
    """Run one export; returns (file, facts to print). Fails (and removes the file) on a parity miss."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    facts: dict = {}
    if fmt == "safetensors":
        facts["sidecar"] = str(export_safetensors(loaded, out))
        return out, facts
    diff = export_onnx(loaded, out) if fmt == "onnx" else export_torchscript(loaded, out)
    facts["max_abs_diff"] = diff
    if not diff <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise ExportCheckFailed(f"{fmt} export of {loaded.model_name} differs from PyTorch by {diff:.3g} "
                                f"(> {TOLERANCE:g} max abs logit difference); the file was removed")
    return out, facts
