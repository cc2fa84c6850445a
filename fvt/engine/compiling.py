"""``--compile auto``: compile only when the run is long enough to repay the compile time.

On the 2-core CPU, inductor took 85-109 s to compile a FasterViT training step and made the step
6-9% faster (docs/speed.md, ``benchmarks/compile_speed.py``). Compiling pays when the time it saves
exceeds what it costs:

    GAIN x (estimated training time)  >  COMPILE_S x (input sizes the run trains at)

i.e. on CPU a training of more than ~30 minutes at one size. Every progressive-resizing size is
compiled on its own, so it multiplies the cost. fvt has not measured CUDA; there it assumes the
same gain and a shorter compile (a GPU step is short, most of the compile is tracing), which keeps
the choice conservative. Inductor on CPU needs a C++ compiler: without one, ``auto`` stays eager.
``on`` and ``off`` (or the old ``true``/``false``) force the choice.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional, Tuple

import torch

from .budget import duration

GAIN = 0.06                                # the smallest training speed-up measured on CPU (6-9%)
COMPILE_S = {"cpu": 110.0, "cuda": 60.0}   # seconds per input size (CPU: the measured 85-109 s, rounded up)


def has_cxx_compiler() -> bool:
    return bool(os.environ.get("CXX") or any(shutil.which(c) for c in ("g++", "c++", "clang++")))


def compile_choice(setting: str, device: torch.device, train_s: Optional[float], sizes: int = 1) -> Tuple[bool, str]:
    """(compile?, the log line saying why) for ``--compile setting``."""
    if setting in ("on", "off"):
        return setting == "on", f"compile: {setting} (--compile {setting})"
    if device.type == "cpu" and not has_cxx_compiler():
        return False, "compile auto: off (inductor needs a C++ compiler on CPU and none was found)"
    if train_s is None:
        return False, "compile auto: off (the run's length is unknown)"
    cost = COMPILE_S.get(device.type, COMPILE_S["cuda"]) * max(1, sizes)
    pays_after = cost / GAIN
    what = f"~{cost:.0f} s of compiling{f' ({sizes} input sizes)' if sizes > 1 else ''}"
    if GAIN * train_s > cost:
        return True, (f"compile auto: on (training estimated at {duration(train_s)}; {what} is repaid after "
                      f"{duration(pays_after)} at a {GAIN:.0%} faster step)")
    return False, (f"compile auto: off (training estimated at {duration(train_s)}, shorter than the "
                   f"{duration(pays_after)} it takes a {GAIN:.0%} faster step to repay {what})")
