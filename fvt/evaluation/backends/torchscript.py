"""TorchScript exports (``fvt export --format torchscript``, legacy: torch.jit is deprecated in favour of
torch.export): metadata in the extra file fvt.json."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Tuple

import torch

from ...errors import CheckpointError
from .common import META_KEY, Runtime, parse_meta


def load(path: Path, device: str = "auto") -> Tuple[Runtime, dict]:
    extra = {f"{META_KEY}.json": ""}
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated; this format stays readable as long as it loads
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load. is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a loadable TorchScript file ({str(e).splitlines()[0][:200]})") from None
    meta = parse_meta(extra[f"{META_KEY}.json"], path)
    module.eval()

    def run(a):
        with torch.no_grad():
            return module(torch.from_numpy(a)).float().numpy()

    return Runtime("torchscript", run, meta), meta
