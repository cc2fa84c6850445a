"""Any torch device: what ``--device`` may name, and what each device type supports.

``--device`` takes ``auto`` or whatever ``torch.device()`` takes (``cpu``, ``cuda``, ``cuda:N``, ``mps``,
``xpu``, ...); the device must be usable here. ``auto`` is the accelerator torch finds
(``torch.accelerator``), else the CPU. Per device type, this module is the one place that says:

* which autocast dtypes ``--amp`` may ask for, and what ``--amp auto`` picks (used by engine.precision);
* which process-group backend torchrun jobs use (``torch.distributed``'s default for the device: NCCL
  for CUDA, XCCL for XPU, gloo for the CPU), refusing device types no backend can reduce on;
* whether DataLoader workers should pin host memory (only where a copy to device memory follows).

Only the CPU decisions were run on the development machine; the others are tested with the device type
faked (tests/test_devices.py) and follow PyTorch's documentation for each type.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import UsageError

EXAMPLES = "auto, cpu, cuda, cuda:N, mps, xpu"
# autocast dtypes --amp may ask for (fp16 needs a GradScaler and fast half-precision math: GPUs)
AMP_DTYPES = {"cpu": ("bf16",), "cuda": ("bf16", "fp16"), "xpu": ("bf16", "fp16"), "mps": ("bf16", "fp16")}
# pinned (page-locked) host memory speeds up the copy to these devices; on the CPU and on Apple's unified
# memory (mps) there is no such copy to speed up
PINS_MEMORY = ("cuda", "xpu")


def device_available(dev_type: str) -> Optional[bool]:
    """Whether torch can use a device of this type here; None when torch has no way to tell."""
    if dev_type == "cpu":
        return True
    if dev_type == "mps":
        return bool(torch.backends.mps.is_available())
    probe = getattr(getattr(torch, dev_type, None), "is_available", None)
    return bool(probe()) if callable(probe) else None


def device_count(dev_type: str) -> int:
    count = getattr(getattr(torch, dev_type, None), "device_count", None)
    return int(count()) if callable(count) else 1


def default_accelerator() -> str:
    """The accelerator type ``auto`` picks (``cuda``, ``xpu``, ``mps``, ...), else ``cpu``."""
    acc = getattr(torch, "accelerator", None)  # torch >= 2.6
    if acc is not None and acc.is_available():
        found = acc.current_accelerator(check_available=True)
        if found is not None:
            return found.type
    return "cuda" if torch.cuda.is_available() else "cpu"


def _usable_types() -> str:
    return ", ".join(t for t in ("cpu", "cuda", "xpu", "mps") if device_available(t))


def resolve_device(name: Optional[str], local_rank: int = 0, flag: str = "--device") -> torch.device:
    """``auto`` -> the accelerator (this process's one under torchrun) or the CPU; a bare accelerator
    type -> its device ``LOCAL_RANK``; ``type:N`` -> that device. Anything torch cannot use here is one
    UsageError naming what would work."""
    text = str(name or "auto").strip()
    if text.lower() == "auto":
        text = default_accelerator()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag} {name}: not a device torch knows; use {EXAMPLES} (any torch device type)") from None
    available = device_available(dev.type)
    if dev.type == "meta" or available is None:
        raise UsageError(f"{flag} {name}: fvt cannot run on a {dev.type} device (torch cannot tell whether one is "
                         f"usable here); use {EXAMPLES}")
    if not available:
        raise UsageError(f"{flag} {name}: no {dev.type} device is available here (usable: {_usable_types()}); "
                         f"use --device cpu or auto")
    if dev.type == "cpu":
        return torch.device("cpu")
    count = device_count(dev.type)
    if dev.index is None:  # under torchrun, each process on a node takes its own device
        return torch.device(dev.type, local_rank % max(count, 1))
    if dev.index >= count:
        raise UsageError(f"{flag} {name}: this machine has {count} {dev.type} device(s) "
                         f"({dev.type}:0 to {dev.type}:{count - 1})")
    return dev


def amp_dtypes(device: torch.device) -> tuple:
    """The ``--amp`` values (bf16, fp16) autocast supports on this device type."""
    if device.type in AMP_DTYPES:
        return AMP_DTYPES[device.type]
    check = getattr(torch.amp, "is_autocast_available", None)
    return ("bf16",) if check is not None and check(device.type) else ()


def auto_amp(device: torch.device) -> Optional[str]:
    """What ``--amp auto`` means on an accelerator (the CPU is timed instead: engine.precision)."""
    if device.type == "cuda":
        # bf16 runs at full speed from Ampere on; older GPUs only emulate it, fp16 is their fast type
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if device.type == "mps":
        return "fp16"  # bf16 needs macOS 14 and is not faster on Apple GPUs
    return "bf16" if "bf16" in amp_dtypes(device) else None


def ddp_backend(device: torch.device) -> str:
    """The process-group backend for a torchrun job on this device type."""
    import torch.distributed as dist

    if device.type == "mps":
        raise UsageError("--device mps under torchrun: PyTorch has no process-group backend that reduces MPS "
                         "tensors; train in one process")
    if not hasattr(dist, "get_default_backend_for_device"):  # torch < 2.6
        return "nccl" if device.type == "cuda" else "gloo"
    try:
        backend = dist.get_default_backend_for_device(device)
    except (ValueError, RuntimeError):
        raise UsageError(f"--device {device.type} under torchrun: torch has no process-group backend registered "
                         f"for {device.type} devices; train in one process, or on cuda/xpu/cpu") from None
    available = {"nccl": dist.is_nccl_available, "gloo": dist.is_gloo_available,
                 "xccl": getattr(dist, "is_xccl_available", lambda: False)}.get(backend)
    if available is not None and not available():
        raise UsageError(f"--device {device.type} under torchrun needs the {backend} process-group backend, which "
                         f"this torch build lacks; use --device cpu (gloo) or a torch build with {backend}")
    return backend


def pin_memory_for(device: torch.device) -> bool:
    """Whether DataLoader workers should hand over pinned batches for ``device``."""
    return device.type in PINS_MEMORY
