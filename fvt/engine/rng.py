"""RNG state capture/restore in plain types and tensors (checkpoint-safe), for exact resume."""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch


def get_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain Python types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def iter_keeping_rng(loader) -> Iterator:
    """Iterate a DataLoader without letting the iterator's creation draw from the global torch RNG.

    A DataLoader draws a base seed from the global generator each time an iterator is made;
    a resumed run makes one at a different point than the uninterrupted run would, so we
    hide that draw. (Augmentation is seeded per sample by the data stage, not by workers.)"""
    state = torch.get_rng_state()
    it = iter(loader)
    torch.set_rng_state(state)
    return it


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
