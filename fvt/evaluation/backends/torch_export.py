"""torch.export: an ExportedProgram saved as a ``.pt2`` archive with a dynamic batch axis, and fvt's
metadata as the archive's extra file ``fvt.json``.

Plain PyTorch reads it back without fvt (PyTorch's documented API)::

    extra = {"fvt.json": ""}
    program = torch.export.load("best.pt2", extra_files=extra)
    logits = program.module()(batch)            # batch: (N, 3, H, W), normalised as extra["fvt.json"] says

A PT2 archive can hold pickled objects, which ``torch.export.load`` unpickles with ``weights_only=False``
(code could run). fvt writes none, and its loader refuses an archive that holds any before PyTorch
reads it, so loading a ``.pt2`` through fvt runs no code from the file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Tuple

import torch

from ...errors import CheckpointError
from .common import META_KEY, Runtime, parse_meta

EXTRA_FILE = f"{META_KEY}.json"


def batch_dim():
    return torch.export.Dim("batch", min=1)


def export_program(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    """The model as an ExportedProgram whose batch axis is dynamic (any N >= 1)."""
    return torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch_dim()}})


def export(model: torch.nn.Module, meta: dict, out: Path, example: torch.Tensor) -> dict:
    from ..quiet import third_party

    meta = dict(meta, precision="fp32", input="normalized")
    with third_party():
        program = export_program(model, example)
        torch.export.save(program, str(out), extra_files={EXTRA_FILE: json.dumps(meta)})
    return meta


def pt2_kind(path: Path) -> str:
    """``aoti`` (an AOTInductor package) or ``torch-export`` (an ExportedProgram archive)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a PT2 archive ({e})") from None
    if any("/data/aotinductor/" in n for n in names):
        return "aoti"
    if any("/models/" in n and n.endswith(".json") for n in names):
        return "torch-export"
    raise CheckpointError(f"{path}: a zip file without an exported program or AOTInductor model; "
                          f"export it with `fvt export --format torch-export` or `--format aoti`")


def check_data_only(path: Path) -> None:
    """Refuse an archive that holds pickled objects (torch.export.load would unpickle them unsafely)."""
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            base = name.rsplit("/", 1)[-1]
            if "/data/weights/" in name or "/data/constants/" in name:
                if base.endswith(".pt") or base.startswith(("custom_obj", "opaque_obj")):
                    raise CheckpointError(f"{path}: holds pickled objects ({name}); fvt loads only data-only "
                                          f"PT2 archives such as `fvt export --format torch-export` writes")
                if base.endswith("_config.json") and _uses_pickle(z.read(name)):
                    raise CheckpointError(f"{path}: holds pickled tensors ({name}); fvt loads only data-only "
                                          f"PT2 archives such as `fvt export --format torch-export` writes")
            elif "/data/sample_inputs/" in name:
                try:  # what torch.export.load would unpickle: it must load as plain tensors
                    torch.load(io.BytesIO(z.read(name)), weights_only=True)
                except Exception as e:  # any refusal by the weights-only unpickler
                    raise CheckpointError(f"{path}: its sample inputs {name} are not plain tensors "
                                          f"({str(e).splitlines()[0][:120]})") from None


def _uses_pickle(text: bytes) -> bool:
    try:
        config = json.loads(text).get("config", {})
    except (ValueError, AttributeError):
        return True
    return any(not isinstance(v, dict) or v.get("use_pickle", True) for v in config.values())


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    check_data_only(path)
    extra = {EXTRA_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # torch raises many types for a damaged or foreign archive
        raise CheckpointError(f"{path}: not a loadable ExportedProgram ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    meta = parse_meta(extra[EXTRA_FILE], path)
    module = program.module()

    def run(a):
        with torch.no_grad():
            return module(torch.from_numpy(a)).float().numpy()

    return Runtime("torch.export", run, meta), meta
