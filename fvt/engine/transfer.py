"""Transfer learning: start weights, freezing, and BatchNorm statistics.

``--freeze none | head | stages:N``: ``head`` trains only the classifier; ``stages:N`` freezes
the stem and the first N entries of ``model.stages`` (everything registered before stage N).
BatchNorm layers whose weights are all frozen, and every BatchNorm layer with ``--bn-eval``,
stay in eval mode during training so their running statistics do not drift.
"""

from __future__ import annotations

import re
from typing import List, Tuple

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UsageError

_STAGES = re.compile(r"^stages:(\d+)$")


def parse_freeze(spec: str) -> Tuple[str, int]:
    spec = (spec or "none").strip().lower()
    if spec in ("none", "head"):
        return spec, 0
    m = _STAGES.match(spec)
    if not m:
        raise UsageError(f"--freeze {spec!r} is not understood; use none, head or stages:N (e.g. stages:2)")
    return "stages", int(m.group(1))


def _head_params(model: torch.nn.Module) -> set:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None or not isinstance(head, torch.nn.Module):
        raise UsageError("--freeze head needs a model with get_classifier()")
    return {id(p) for p in head.parameters()}


def apply_freeze(model: torch.nn.Module, spec: str) -> List[str]:
    """Set requires_grad=False as ``spec`` asks; returns the frozen parameter names."""
    kind, n = parse_freeze(spec)
    if kind == "none":
        return []
    named = list(model.named_parameters())
    if kind == "head":
        keep = _head_params(model)
        frozen = [name for name, p in named if id(p) not in keep]
    else:
        stages = getattr(model, "stages", None)
        if stages is None:
            raise UsageError("--freeze stages:N needs a model with .stages")
        if not 0 <= n <= len(stages):
            raise UsageError(f"--freeze stages:{n}: this model has {len(stages)} stages; use 0..{len(stages)}")
        if n == 0:
            return []
        stage_ids = [{id(p) for p in s.parameters()} for s in stages]
        last_frozen = stage_ids[n - 1]
        # freeze everything registered up to the last parameter of stage N-1 (stem included)
        cut = max(i for i, (_, p) in enumerate(named) if id(p) in last_frozen)
        frozen = [name for name, _ in named[: cut + 1]]
    names = set(frozen)
    for name, p in named:
        if name in names:
            p.requires_grad_(False)
    return frozen


def frozen_batchnorms(model: torch.nn.Module, bn_eval: bool) -> List[torch.nn.Module]:
    """BatchNorm modules to keep in eval mode: all of them with bn_eval, else the fully frozen ones."""
    out = []
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters(recurse=False))
            if bn_eval or (params and not any(p.requires_grad for p in params)):
                out.append(m)
    return out


def set_train_mode(model: torch.nn.Module, keep_eval: List[torch.nn.Module]) -> None:
    model.train()
    for m in keep_eval:
        m.eval()


def count_params(model: torch.nn.Module) -> Tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
