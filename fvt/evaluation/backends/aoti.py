"""AOTInductor: the model's ExportedProgram compiled ahead of time into a ``.pt2`` package (generated
C++ built into a shared library, plus the weights) for one device, with a dynamic batch axis and fvt's
metadata as the package's ``aot_inductor.metadata`` entry ``fvt``.

Plain PyTorch runs it without fvt and without the model's Python code (PyTorch's documented API)::

    runner = torch._inductor.aoti_load_package("best-aoti.pt2")
    meta = json.loads(runner.get_metadata()["fvt"])   # classes, preprocessing, ...
    logits = runner(batch)                              # batch on the device it was compiled for

The package is machine code for the CPU (instruction set) or GPU it was compiled on; loading one runs
that code. fvt therefore loads only packages whose export record (``NAME.pt2.verify.json``, written by
``fvt export``) is beside them with matching digests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import torch

from ...errors import CheckpointError
from .common import META_KEY, Runtime, parse_meta


def check_available(device: str) -> None:
    """Before any work: this torch has AOTInductor packaging, and the device exists."""
    from ...errors import UsageError

    try:
        from torch._inductor import aoti_compile_and_package  # noqa: F401
    except ImportError:
        raise UsageError(f"--format aoti needs torch >= 2.6 (AOTInductor packages); this is torch "
                         f"{torch.__version__}: export --format torch-export instead") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device here to compile the AOTInductor package for; "
                         f"use --device cpu")


def export(model: torch.nn.Module, meta: dict, out: Path, example: torch.Tensor, device: str = "cpu") -> dict:
    from torch._inductor import aoti_compile_and_package

    from ..quiet import third_party
    from .torch_export import export_program

    meta = dict(meta, precision="fp32", input="normalized", aoti_device=device)
    with third_party():
        program = export_program(model.to(device), example.to(device))
        aoti_compile_and_package(program, package_path=str(out),
                                 inductor_configs={"aot_inductor.metadata": {META_KEY: json.dumps(meta)}})
    model.to("cpu")
    return meta


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    from ..export_record import check_integrity, record_path
    from ..quiet import third_party

    if not record_path(path).is_file():
        raise CheckpointError(f"{path}: an AOTInductor package is compiled machine code, and fvt runs only "
                              f"packages it exported itself (with {record_path(path).name} beside them); "
                              f"if you trust its origin, load it with torch._inductor.aoti_load_package")
    check_integrity(path)
    try:
        with third_party(replay=False):  # Inductor's import notes ("No CUDA runtime is found"); errors: below
            from torch._inductor import aoti_load_package

            runner = aoti_load_package(str(path))
    except Exception as e:  # a package built for another device, platform or torch version
        raise CheckpointError(f"{path}: cannot load this AOTInductor package here ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''}); export it again on this "
                              f"machine") from None
    found = runner.get_metadata()
    meta = parse_meta(found.get(META_KEY), path)
    on = found.get("AOTI_DEVICE_KEY") or meta.get("aoti_device", "cpu")

    def run(a):
        with torch.no_grad():
            return runner(torch.from_numpy(a).to(on)).float().cpu().numpy()

    return Runtime("aoti", run, meta), meta
