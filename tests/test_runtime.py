"""fvt.runtime.tune_allocator: glibc keeps freed memory for reuse instead of unmapping it.

Checked by glibc itself (mallinfo2) in a fresh interpreter per case, since the setting is
process-wide: a 64 MiB block (above any mmap threshold glibc picks on its own, at most 32 MiB)
must come from the heap, not from mmap, and stay in the heap's free lists after free()."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt tuning applies to glibc only")

PROBE = r"""
import ctypes, json
from fvt.runtime import tune_allocator
state = tune_allocator()
again = tune_allocator()
libc = ctypes.CDLL(None)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
before = libc.mallinfo2().hblks
p = libc.malloc(size)
ctypes.memset(p, 1, size)
during = libc.mallinfo2().hblks - before
libc.free(p)
print(json.dumps({"state": state, "again": again, "mmapped": during, "free_kept": libc.mallinfo2().fordblks}))
"""


def probe(**env) -> dict:
    full = {k: v for k, v in os.environ.items() if k != "FVT_MALLOC"}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tuned_allocator_serves_large_blocks_from_the_heap_and_keeps_them():
    r = probe()
    assert r["state"] == r["again"] == "tuned"
    assert r["mmapped"] == 0  # from the heap, not a fresh mapping
    assert r["free_kept"] >= 64 << 20  # freed but kept for the next step


def test_opt_out_keeps_glibc_defaults():
    r = probe(FVT_MALLOC="system")
    assert r["state"] == "system"
    assert r["mmapped"] == 1  # glibc's default: a large block is its own mapping
    assert r["free_kept"] < 64 << 20  # and goes back to the system on free
