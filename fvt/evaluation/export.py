"""Export a trained model for deployment and check the file in the same call.

Formats (``formats.FORMATS``): ONNX (dynamo exporter with the legacy one as fallback; opset, dynamic
axes, fp16, int8, simplified, normalisation inside), OpenVINO IR (fp32 / fp16 / int8 via NNCF),
torch.export ExportedProgram (.pt2), AOTInductor package (.pt2), TensorRT (GPU only), CoreML,
safetensors (+ JSON sidecar), a timm folder (config.json + model.safetensors + README.md) and
TorchScript (legacy). Every export carries ``LoadedModel.metadata()`` (class names, eval
preprocessing, model name/arguments, weights licence, ...); every export that can run here is
reloaded through fvt's own loader and compared against PyTorch on real images (``verify``).
An export is written beside its destination and moved into place only after that check
(``export_output.staged``), with its record (check, exporter, file digests: ``export_record``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from ..errors import CheckpointError, UsageError
from . import export_record
from . import verify as V
from .backends import META_KEY
from .export_output import conflict, staged
from .formats import DEFAULT_OPSET, FLOAT_ONLY, FORMATS, SUFFIX, check_opset  # noqa: F401  (SUFFIX: callers)
from .loading import LoadedModel

TOLERANCE = V.PROB_TOLERANCE  # kept for callers that quote the limit


class ExportCheckFailed(CheckpointError):
    """The exported file does not reproduce PyTorch's outputs."""


@dataclass
class ExportOptions:
    opset: Optional[int] = None    # ONNX opset; None: DEFAULT_OPSET
    dynamic: bool = False          # ONNX: height/width too (the batch axis is always dynamic)
    half: bool = False             # fp16
    int8: Optional[str] = None     # "static" | "dynamic" (ONNX); any -> NNCF for OpenVINO
    simplify: bool = False         # ONNX: onnxslim
    with_normalize: bool = False   # ONNX: mean/std inside the graph, input RGB 0..255
    verify: bool = True
    onnx_exporter: str = "auto"    # auto | dynamo | legacy (ONNX and OpenVINO, which goes through ONNX)
    device: str = "cpu"            # aoti: the device the package is compiled for

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"


def _example(loaded: LoadedModel, batch: int, seed: int = 0) -> torch.Tensor:
    h, w = loaded.preprocessing["input_size"]
    g = torch.Generator().manual_seed(seed)
    chans = len(loaded.preprocessing.get("mean") or (0, 0, 0))
    return torch.randn(batch, chans, int(h), int(w), generator=g)


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
        self.training = False  # an inference wrapper (exporters warn about modules in training mode)

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
    """A traced TorchScript module with the metadata as the extra file ``fvt.json`` (legacy format)."""
    import json
    import warnings

    model = traceable(loaded)
    with warnings.catch_warnings():  # torch.jit's deprecation notices; the format is kept as legacy
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, _example(loaded, 2), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"fvt.json": json.dumps(dict(loaded.metadata(),
                                                                                   precision="fp32"))})


def check_options(fmt: str, opts: ExportOptions) -> None:
    """Flag combinations, before any work."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    onnx_only = [f for f, on in (("--opset", opts.opset is not None), ("--dynamic", opts.dynamic),
                                 ("--simplify", opts.simplify), ("--with-normalize", opts.with_normalize)) if on]
    if onnx_only and fmt != "onnx":
        raise UsageError(f"{', '.join(onnx_only)} apply to --format onnx only, not {fmt}")
    if opts.onnx_exporter != "auto" and fmt not in ("onnx", "openvino"):
        raise UsageError(f"--onnx-exporter applies to --format onnx and openvino (built from an ONNX graph), "
                         f"not {fmt}")
    check_opset(opts.opset, opts.onnx_exporter)
    if opts.half and opts.int8:
        raise UsageError("--half and --int8 exclude each other; pick one precision")
    if (opts.half or opts.int8) and fmt in FLOAT_ONLY:
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


def _graph_judge(loaded: LoadedModel, images: List[torch.Tensor]):
    """How ``auto`` judges a dynamo-exported ONNX graph: fp32 parity with PyTorch on the check images."""
    reference = _cpu_model(loaded)
    return lambda runtime: V.judge(V.compare(reference, runtime, images), "fp32")


def _write(loaded: LoadedModel, fmt: str, out: Path, opts: ExportOptions, images: List[torch.Tensor],
           check_graph: bool) -> dict:
    """Write the export; returns facts for the record (exporter, sidecar, files)."""
    meta = loaded.metadata()
    if fmt == "safetensors":
        return {"sidecar": str(export_safetensors(loaded, out))}
    if fmt == "torchscript":
        export_torchscript(loaded, out)
        return {}
    if fmt == "timm-folder":
        from .timm_folder import export_folder

        export_folder(loaded, out)
        return {}
    judge = _graph_judge(loaded, images) if check_graph else None  # before traceable(): eval() clears its caches
    model, example = traceable(loaded), _example(loaded, 2)
    calib = [b.numpy() for b in images]
    if fmt == "onnx":
        from .backends import onnx

        meta = onnx.export(model, meta, out, example, opts.opset or DEFAULT_OPSET, opts.dynamic, opts.half,
                           opts.int8, opts.simplify, opts.with_normalize, calib, opts.onnx_exporter, judge)
    elif fmt == "openvino":
        from .backends import openvino

        meta = openvino.export_from_torch(model, meta, out, example, opts.precision, calib, opts.onnx_exporter,
                                          judge)
    elif fmt == "torch-export":
        from .backends import torch_export

        meta = torch_export.export(model, meta, out, example)
    elif fmt == "aoti":
        from .backends import aoti

        meta = aoti.export(model, meta, out, example, opts.device)
    elif fmt == "tensorrt":
        from .backends import tensorrt

        meta = tensorrt.export(model, meta, out, example, opts.precision)
    elif fmt == "coreml":
        from .backends import coreml

        meta = coreml.export(model, meta, out, example, opts.precision)
    return {k: meta[k] for k in ("exporter", "exporter_note") if k in meta}


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
    batches for calibration and verification. Fails (leaving nothing at ``out``) on a parity miss."""
    from .. import __version__

    opts = opts or ExportOptions()
    check_options(fmt, opts)
    _cpu_model(loaded)
    inputs = [Path(loaded.info["source"])] if loaded.info.get("source") else []
    why = conflict(Path(out), fmt, inputs)
    if why:
        raise UsageError(f"{out}: {why}; fvt never writes over its input, a run file or a file it did not export")
    if opts.dynamic:
        _check_dynamic_size(loaded)
    if fmt == "tensorrt":
        from .backends.tensorrt import _need_gpu

        _need_gpu("a TensorRT export")
    if fmt == "aoti":
        from .backends.aoti import check_available

        check_available(opts.device)
    if images is None:
        images, source = [_example(loaded, 4, seed=s) for s in (1, 2)], "random inputs (no images given)"
    with staged(Path(out), fmt) as work:
        facts = _write(loaded, fmt, work, opts, images, check_graph=opts.verify)
        base = dict(facts, precision=opts.precision, fvt_version=__version__, model_name=loaded.model_name,
                    checkpoint=str(inputs[0].resolve()) if inputs else None,
                    weights_license=loaded.metadata().get("weights_license"))
        export_record.write(work, fmt, dict(base, check="pending"))  # the digests the check's load verifies
        if opts.verify:
            result = _verify(loaded, fmt, work, opts, images, source)
            facts["verify"] = result
            if "max_abs_logit_diff" in result:
                facts["max_abs_diff"] = result["max_abs_logit_diff"]
            why = None if result.get("skipped") else V.judge(result, opts.precision)
            if why:
                raise ExportCheckFailed(f"{fmt} export of {loaded.model_name} does not match PyTorch: {why}; "
                                        f"nothing was written")
        else:
            result = {"skipped": "--no-check"}
        export_record.write(work, fmt, dict(base, **result))
    facts["verify_file"] = str(export_record.record_path(Path(out)))
    if "sidecar" in facts:
        facts["sidecar"] = str(Path(out).with_suffix(".json"))
    return Path(out), facts
