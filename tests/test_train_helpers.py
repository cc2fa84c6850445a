"""Shared fixtures for the engine tests (no tests here): tiny image folders and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "faster_vit_nano", "--img-size", "32", "--workers", "0", "--warmup-epochs", "0",
        "--auto-augment", "none", "--reprob", "0", "--log-every", "1"]


def make_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 36, seed: int = 0) -> Path:
    """Class folders of random PNGs whose colour channel tells the class (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3))
            img[..., c % 3] += 150 + 40 * (c // 3)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"img_{i}.png")
    return root


def run_fvt(args, env_extra=None, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", FVT_PROGRESS="off")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fvt", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd or REPO)
