"""Process-wide settings that make PyTorch on CPU faster, applied by fvt's commands and API.

glibc's malloc returns large freed blocks to the operating system: blocks above its mmap
threshold are unmapped on free, and free memory at the top of the heap is trimmed. A training
or inference step allocates and frees the same activation buffers every step, so every step
pays page faults (the kernel zeroing fresh pages) on hundreds of megabytes. On a virtual machine
that reclaims freed memory, this cost dominates element-wise ops: on the 2-core AMD EPYC dev VM a
FasterViT-0 bf16 eval step ran 1.13-1.37x faster, and a train step 1.04-1.18x, once freed memory was
kept for reuse (docs/speed.md). :func:`tune_allocator` asks glibc to keep it: no mmap for large blocks,
and trimming only beyond 2 GiB of free heap top. Memory use is bounded by the process's peak
(what it already needed at once), it is just not handed back between steps.

Set ``FVT_MALLOC=system`` to keep glibc's defaults. Elsewhere (macOS, Windows, musl) it does
nothing. jemalloc or tcmalloc preloaded with ``LD_PRELOAD`` reach the same effect and are left
alone (glibc's mallopt does not touch them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_BYTES = 2 ** 31 - 1  # mallopt takes an int: the largest threshold it accepts

_state: str | None = None


def tune_allocator() -> str:
    """Keep freed memory for reuse (see the module docstring). Idempotent; returns what was done:
    ``"tuned"``, ``"system"`` (opted out with FVT_MALLOC=system) or ``"unavailable"``."""
    global _state
    if _state is not None:
        return _state
    if os.environ.get("FVT_MALLOC", "").strip().lower() == "system":
        _state = "system"
        return _state
    _state = "unavailable"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _state
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    except (OSError, AttributeError):
        return _state
    if ok:
        _state = "tuned"
    return _state
