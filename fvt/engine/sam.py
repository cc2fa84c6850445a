"""Sharpness-aware minimization (SAM, Foret et al. 2021; adaptive ASAM, Kwon et al. 2021).

A SAM step takes the gradient g at w, moves to the worst nearby point w + e with
e = rho * g / ||g|| (ASAM: scaled by |w|^2), computes the gradient there, restores w and lets the
base optimizer step with that second gradient. It wraps any optimizer (AdamW, SophiaG, ...) without
touching its state, so checkpoints and resume are unchanged. Cost: a second forward/backward per step.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Tuple

import torch
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def ascend(params: List[torch.nn.Parameter], rho: float, adaptive: bool = False) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Move every parameter with a gradient to w + e; returns the (param, e) pairs for :func:`descend_back`.
    The direction ignores a GradScaler's scale; under DDP the gradients are already all-reduced, so every rank moves the same way."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return []
    scaled = [(p.abs() * p.grad if adaptive else p.grad).float() for p in with_grad]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
    if not torch.isfinite(norm):  # an fp16 overflow step: the GradScaler will skip it anyway
        return []
    factor = rho / (norm + 1e-12)
    moved = []
    for p, s in zip(with_grad, scaled):
        e = (s * p.abs() if adaptive else s).mul_(factor).to(p.dtype)
        p.add_(e)
        moved.append((p, e))
    return moved


@torch.no_grad()
def descend_back(moved: List[Tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Undo :func:`ascend` (the gradients now in .grad were taken at w + e)."""
    for p, e in moved:
        p.sub_(e)


@contextlib.contextmanager
def bn_stats_frozen(model: torch.nn.Module) -> Iterator[None]:
    """The second (perturbed) forward must not count twice in BatchNorm's running statistics."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.training:
            saved.append((m, m.momentum))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in saved:
            m.momentum = mom
