"""Inference backends: every deployment format behind one call convention.

``load_backend(path)`` returns a :class:`Runtime` for an exported file: an ``nn.Module``
whose forward takes the fvt-preprocessed float batch (N, 3, H, W) and returns float32
logits, plus the metadata (classes, preprocessing) the export carries. fvt eval / predict
therefore run an ONNX, OpenVINO, torch.export (.pt2), AOTInductor (.pt2), TensorRT, CoreML or
TorchScript file exactly as they run PyTorch weights (``fvt.evaluation.loading`` handles the
PyTorch files themselves).

The heavy runtimes are optional extras; a missing one is one line naming the extra. What the
backends share (``Runtime``, ``parse_meta``, ``META_KEY``, ``require``) is in ``backends.common``,
which they import; this module dispatches to them."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from ...errors import UsageError
from .common import EXTRAS, META_KEY, Runtime, parse_meta, require  # noqa: F401  (re-exported for callers)

# suffix -> (format, backend module); folders are timm-folder exports, other files torch checkpoints
SUFFIX_FORMAT = {".onnx": "onnx", ".xml": "openvino", ".engine": "tensorrt", ".plan": "tensorrt",
                 ".mlpackage": "coreml", ".mlmodel": "coreml", ".safetensors": "safetensors"}


def detect_format(path: Path) -> str:
    """onnx | openvino | torch-export | aoti | tensorrt | coreml | safetensors | timm-folder | torchscript
    | checkpoint."""
    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt:
        return fmt
    if path.suffix.lower() == ".pt2" and path.is_file():
        from .torch_export import pt2_kind

        return pt2_kind(path)
    if path.is_dir():
        return "timm-folder" if (path / "config.json").is_file() else "folder"
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist()):
                    return "torchscript"
    except OSError:
        pass
    return "checkpoint"


def load_backend(path: Path, fmt: str, device: str = "auto") -> Tuple[Runtime, dict]:
    """(runtime, metadata) for an exported file of format ``fmt`` (see ``detect_format``)."""
    if fmt == "onnx":
        from .onnx import load
    elif fmt == "openvino":
        from .openvino import load
    elif fmt == "tensorrt":
        from .tensorrt import load
    elif fmt == "coreml":
        from .coreml import load
    elif fmt == "torchscript":
        from .torchscript import load
    elif fmt == "torch-export":
        from .torch_export import load
    elif fmt == "aoti":
        from .aoti import load
    else:
        raise UsageError(f"{path}: no inference backend for format {fmt!r}")
    return load(path, device)
