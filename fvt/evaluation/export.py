"""Export a trained model for deployment and check the file in the same call.

Formats: ONNX (opset, dynamic axes, fp16, int8, simplified, normalisation inside), OpenVINO IR
(fp32 / fp16 / int8 via NNCF), TensorRT (GPU only), CoreML, TorchScript, safetensors (+ JSON
sidecar) and a timm folder (config.json + model.safetensors + README.md). Every export carries
the class names, the eval preprocessing and the model name/arguments; every export that can run
here is reloaded through fvt's own loader and compared against PyTorch on real images
(``verify``). An fp32 export that misses the tolerance is removed."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..errors import CheckpointError, UsageError
from . import verify as V
from .backends import META_KEY
from .formats import FORMATS, SUFFIX  # noqa: F401  (re-exported: callers import them from here)
from .loading import LoadedModel
TOLERANCE = V.PROB_TOLERANCE  # kept for callers that quote the limit


class ExportCheckFailed(CheckpointError):
    """The exported file does not reproduce PyTorch's outputs."""


@dataclass
class ExportOptions:
    opset: int = 17
    dynamic: bool = False          # ONNX: height/width too (the batch axis is always dynamic)
    half: bool = False             # fp16
    int8: Optional[str] = None     # "static" | "dynamic" (ONNX); any -> NNCF for OpenVINO
    simplify: bool = False         # ONNX: onnxslim
    with_normalize: bool = False   # ONNX: mean/std inside the graph, input RGB 0..255
    verify: bool = True

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"


def _example(loaded: LoadedModel, batch: int, seed: int = 0) -> torch.Tensor:
    h, w = loaded.preprocessing["input_size"]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, len(loaded.preprocessing["mean"]), int(h), int(w), generator=g)  # one mean per channel


def _cpu_model(loaded: LoadedModel) -> torch.nn.Module:
    if not loaded.is_torch:
        raise UsageError(f"export needs PyTorch weights (an fvt checkpoint, safetensors or timm folder), "
                         f"not a {loaded.kind} file")
    return loaded.model.float().cpu().eval()


def traceable(loaded: LoadedModel) -> torch.nn.Module:
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


def export_safetensors(loaded: LoadedModel, out: Path) -> Path:
    """Weights as safetensors (metadata in the header too) and a JSON sidecar next to them."""
    import json

    from safetensors.torch import save_file

    model = _cpu_model(loaded)
    # safetensors refuses shared storage: give every tensor its own contiguous copy.
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    meta = loaded.metadata()
    save_file(state, str(out), metadata={META_KEY: json.dumps(meta)})
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2))
    return sidecar


def export_torchscript(loaded: LoadedModel, out: Path) -> None:
    """A traced TorchScript module with the metadata as the extra file ``fvt.json``."""
    import json

    model = traceable(loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(loaded, 2), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"fvt.json": json.dumps(dict(loaded.metadata(),
                                                                                   precision="fp32"))})


def _check_options(fmt: str, opts: ExportOptions) -> None:
    onnx_only = [f for f, on in (("--opset", opts.opset != 17), ("--dynamic", opts.dynamic),
                                 ("--simplify", opts.simplify), ("--with-normalize", opts.with_normalize)) if on]
    if onnx_only and fmt != "onnx":
        raise UsageError(f"{', '.join(onnx_only)} apply to --format onnx only, not {fmt}")
    if opts.half and opts.int8:
        raise UsageError("--half and --int8 exclude each other; pick one precision")
    if (opts.half or opts.int8) and fmt in ("torchscript", "safetensors", "timm-folder"):
        raise UsageError(f"--half/--int8 do not apply to --format {fmt} (it keeps the float32 weights); "
                         f"use onnx, openvino, tensorrt or coreml")
    if opts.int8 and fmt == "coreml":
        raise UsageError("--int8 is not supported for CoreML here; use --half")


def _check_dynamic_size(loaded: LoadedModel) -> None:
    """--dynamic H/W only where the same weights build the model at another size."""
    from ..models import create_model

    h, w = loaded.preprocessing["input_size"]
    kwargs = {k: v for k, v in loaded.model_kwargs.items() if k != "window_size"}
    kwargs["img_size"] = [2 * int(h), 2 * int(w)]
    try:
        other = create_model(loaded.model_name, **kwargs).state_dict()
        fits = all(tuple(other[k].shape) == tuple(v.shape) for k, v in loaded.model.state_dict().items())
    except Exception:  # any failure to build at the other size means: not size-agnostic
        fits = False
    if not fits:
        raise UsageError(f"--dynamic: {loaded.model_name} is built for {h}x{w} input (its attention windows and "
                         f"position biases are sized at build time), so only the batch axis can be dynamic, "
                         f"and it always is; drop --dynamic")


def _write(loaded: LoadedModel, fmt: str, out: Path, opts: ExportOptions, calib: Optional[List[torch.Tensor]]) -> dict:
    meta = loaded.metadata()
    calib_np = [b.numpy() for b in calib] if calib else None
    if fmt == "safetensors":
        return {"sidecar": str(export_safetensors(loaded, out))}
    if fmt == "torchscript":
        export_torchscript(loaded, out)
        return {}
    if fmt == "timm-folder":
        from .timm_folder import export_folder

        return {"files": [str(p) for p in export_folder(loaded, out)]}
    model, example = traceable(loaded), _example(loaded, 2)
    if fmt == "onnx":
        from .backends import onnx

        onnx.export(model, meta, out, example, opts.opset, opts.dynamic, opts.half, opts.int8, opts.simplify,
                    opts.with_normalize, calib_np)
    elif fmt == "openvino":
        from .backends import openvino

        openvino.export_from_torch(model, meta, out, example, opts.precision, calib_np)
    elif fmt == "tensorrt":
        from .backends import tensorrt

        tensorrt.export(model, meta, out, example, opts.precision)
    elif fmt == "coreml":
        from .backends import coreml

        coreml.export(model, meta, out, example, opts.precision)
    return {}


def _remove(out: Path) -> None:
    if out.is_dir():
        shutil.rmtree(out, ignore_errors=True)
    else:
        out.unlink(missing_ok=True)
        if out.suffix == ".xml":  # OpenVINO weights beside the graph
            out.with_suffix(".bin").unlink(missing_ok=True)


def _verify(loaded: LoadedModel, fmt: str, out: Path, opts: ExportOptions, images, source: str) -> dict:
    from .loading import load_any

    if fmt == "coreml":
        from .backends.coreml import CAN_RUN, NO_RUN_REASON

        if not CAN_RUN:
            return {"skipped": NO_RUN_REASON + " (conversion and spec check passed)", "backend": "coreml",
                    "precision": opts.precision}
    exported = load_any(out, device="cpu")
    result = V.compare(_cpu_model(loaded), exported.model, images)
    result.update(backend=exported.backend, precision=opts.precision, source=source, format=fmt)
    return result


def export(loaded: LoadedModel, fmt: str, out: Path, opts: Optional[ExportOptions] = None,
           images: Optional[List[torch.Tensor]] = None, source: str = "random inputs") -> Tuple[Path, dict]:
    """Run one export and its check; returns (file, facts to print). ``images``: preprocessed
    batches for calibration and verification. Fails (and removes the file) on a parity miss."""
    opts = opts or ExportOptions()
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    _check_options(fmt, opts)
    _cpu_model(loaded)
    if opts.dynamic:
        _check_dynamic_size(loaded)
    if fmt == "tensorrt":
        from .backends.tensorrt import _need_gpu

        _need_gpu("a TensorRT export")
    out.parent.mkdir(parents=True, exist_ok=True)
    if images is None:
        images, source = [_example(loaded, 4, seed=s) for s in (1, 2)], "random inputs (no images given)"
    try:
        facts = _write(loaded, fmt, out, opts, images)
        if opts.verify:
            result = _verify(loaded, fmt, out, opts, images, source)
            facts["verify"] = result
            if "max_abs_logit_diff" in result:
                facts["max_abs_diff"] = result["max_abs_logit_diff"]
            why = None if result.get("skipped") else V.judge(result, opts.precision)
            if why:
                raise ExportCheckFailed(f"{fmt} export of {loaded.model_name} does not match PyTorch: {why}; "
                                        f"the file was removed")
            facts["verify_file"] = str(V.write_report(out, result))
    except BaseException:
        _remove(out)
        raise
    return out, facts
