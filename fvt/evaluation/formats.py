"""The export formats, their file names and the ONNX exporter choices: plain data, so ``fvt export
--help`` and a bad flag answer without importing torch (fvt.evaluation.export does the exporting)."""

from __future__ import annotations

from typing import Optional, Tuple

from ..errors import UsageError

FORMATS = ("onnx", "openvino", "torch-export", "aoti", "tensorrt", "coreml", "safetensors", "timm-folder",
           "torchscript")
# the suffix fvt recognises an export by ("" for a folder); torch-export and aoti are both PT2 archives,
# told apart by their contents
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torch-export": ".pt2", "aoti": ".pt2", "tensorrt": ".engine",
          "coreml": ".mlpackage", "torchscript": ".pt", "safetensors": ".safetensors", "timm-folder": ""}
# what a default file name adds after the checkpoint's stem, so no two formats share a name and none takes a
# run file's name (a TorchScript file named best.pt would replace the checkpoint it came from)
# (".torchscript", not "-torchscript": best-*.pt are the run's top-k checkpoints)
NAME_TAG = {"aoti": "-aoti", "torchscript": ".torchscript", "timm-folder": "-timm"}
FLOAT_ONLY = ("torch-export", "aoti", "torchscript", "safetensors", "timm-folder")  # keep the float32 weights
LEGACY_FORMATS = ("torchscript",)

FORMAT_HELP = ("onnx; openvino (IR .xml + .bin); torch-export (a .pt2 ExportedProgram for torch.export.load); "
               "aoti (an AOTInductor .pt2 package of compiled code, for torch._inductor.aoti_load_package); "
               "tensorrt (GPU); coreml; safetensors (+ JSON sidecar); timm-folder (config.json + "
               "model.safetensors + README.md); torchscript (legacy: torch.jit is deprecated, prefer torch-export).")

# ONNX exporters: torch.onnx.export(dynamo=True) builds the graph from torch.export; the TorchScript-based
# exporter is the fallback. The opset ranges are what each writes for FasterViT and onnxruntime runs (below 9
# ONNX has no Erf for GELU; torch's TorchScript exporter stops at 20; the dynamo exporter writes 18 and up and
# silently keeps 18 when asked for less).
ONNX_EXPORTERS = ("auto", "dynamo", "legacy")
OPSETS = {"dynamo": (18, 23), "legacy": (9, 20)}
DEFAULT_OPSET = 18


def check_opset(opset: Optional[int], exporter: str) -> None:
    """One line naming the supported range for an opset no exporter (or not the chosen one) writes."""
    if opset is None:
        return
    low = min(lo for lo, _ in OPSETS.values())
    high = max(hi for _, hi in OPSETS.values())
    ranges = f"the dynamo exporter {_span('dynamo')}, the legacy exporter {_span('legacy')}"
    if not low <= opset <= high:
        raise UsageError(f"--opset {opset}: fvt exports ONNX opsets {low}-{high} ({ranges})")
    if exporter in OPSETS and not OPSETS[exporter][0] <= opset <= OPSETS[exporter][1]:
        other = "legacy" if exporter == "dynamo" else "dynamo"
        raise UsageError(f"--opset {opset}: the {exporter} exporter writes opsets {_span(exporter)}; use "
                         f"--onnx-exporter {other} (opsets {_span(other)}) or auto")


def exporter_plan(exporter: str, opset: int) -> Tuple[Tuple[str, ...], Optional[str]]:
    """(exporters to try in order, why auto skips the dynamo exporter or None)."""
    if exporter != "auto":
        return (exporter,), None
    in_range = {name: lo <= opset <= hi for name, (lo, hi) in OPSETS.items()}
    if not in_range["dynamo"]:
        return ("legacy",), f"the dynamo exporter writes opsets {_span('dynamo')}, not {opset}"
    return (("dynamo", "legacy") if in_range["legacy"] else ("dynamo",)), None


def _span(exporter: str) -> str:
    lo, hi = OPSETS[exporter]
    return f"{lo}-{hi}"
