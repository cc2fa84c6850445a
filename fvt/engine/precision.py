"""Mixed-precision choice: `--amp auto` picks bf16 where it is actually faster.

On accelerators the choice is per device type (fvt.engine.devices: bf16 where the hardware runs it
natively, else fp16). On CPUs it depends on the chip, not on a flag we can read: AMX tiles
(Intel Sapphire Rapids+) and AMD Zen 4's AVX-512 BF16 run a FasterViT train step ~1.5x faster
in bf16, while other AVX-512 CPUs run it slower (measured: FasterViT-nano 86 vs 110 img/s). So
on CPU `auto` times a small matmul+conv forward/backward in both precisions once per process.
"""

from __future__ import annotations

import functools
import time
from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import UsageError
from .devices import amp_dtypes, auto_amp

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# bf16 must win by this much to be chosen: its rounding is not free for small gains.
MIN_SPEEDUP = 1.15


def resolve_amp(amp: str, device: torch.device, deterministic: bool = False) -> Optional[torch.dtype]:
    """The autocast dtype for ``--amp`` on ``device`` (None = float32); what each device type supports
    is in fvt.engine.devices, and asking for a dtype it lacks is one UsageError."""
    if amp == "auto":
        if device.type != "cpu":
            choice = auto_amp(device)
            return None if choice is None else _DTYPES[choice]
        # A timing-based choice could differ between a run and its resume; deterministic runs stay fp32.
        if deterministic:
            return None
        return torch.bfloat16 if _cpu_has_amx() or cpu_bf16_speedup() >= MIN_SPEEDUP else None
    if amp in _DTYPES:
        supported = amp_dtypes(device)
        if amp not in supported:
            if amp == "fp16" and device.type == "cpu":
                raise UsageError("--amp fp16 needs a GPU (cuda, xpu, mps: half precision with a GradScaler); "
                                 "use --amp bf16 on CPU")
            other = f"; use --amp {supported[0]}" if supported else "; use --amp none"
            raise UsageError(f"--amp {amp} is not supported on {device.type} devices{other}")
        return _DTYPES[amp]
    return None


def _cpu_has_amx() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except Exception:
        return False


def _probe_step(dtype: Optional[torch.dtype], w: torch.Tensor, k: torch.Tensor, x: torch.Tensor,
                img: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        out = F.gelu(x @ w).sum() + F.conv2d(img, k, padding=1).relu().sum()
    out.backward()


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(reps: int = 3) -> float:
    """float32 time / bf16 time of a token-MLP matmul plus a 3x3 conv, forward and backward,
    at FasterViT-like sizes (~0.3 s). Uses no random numbers, so it leaves seeded runs unchanged."""
    w = torch.linspace(-1, 1, 192 * 576).reshape(192, 576).requires_grad_()
    k = torch.linspace(-1, 1, 64 * 64 * 9).reshape(64, 64, 3, 3).div(24).requires_grad_()
    x = torch.linspace(-1, 1, 2048 * 192).reshape(2048, 192)
    img = torch.linspace(-1, 1, 8 * 64 * 24 * 24).reshape(8, 64, 24, 24).contiguous(
        memory_format=torch.channels_last)
    best = {}
    for dtype in (None, torch.bfloat16):
        _probe_step(dtype, w, k, x, img)  # warm-up: kernel selection, allocations
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            _probe_step(dtype, w, k, x, img)
            times.append(time.perf_counter() - t)
        best[dtype] = min(times)
    return best[None] / max(best[torch.bfloat16], 1e-9)
