"""Transfer learning: start weights, freezing, and BatchNorm statistics.

``--freeze none | head | stages:N``: ``head`` trains only the classifier; ``stages:N`` freezes
the stem and the first N entries of ``model.stages`` (everything registered before stage N).
BatchNorm layers whose weights are all frozen, and every BatchNorm layer with ``--bn-eval``,
stay in eval mode during training so their running statistics do not drift.

``--freeze-epochs N`` (the fastai ``fine_tune`` pattern): the first N epochs train with ``--freeze``
(``head`` when --freeze is none), then the whole network trains. The optimizer is built with every
parameter (frozen ones get no gradient, so AdamW/SGD leave them and their state alone) and the
freeze state is a function of the epoch alone, so a resume on either side of the switch is exact.
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


def format_params(trainable: int, total: int) -> str:
    """'2,565 of 30.89M parameters train' style: small counts exactly, large ones in millions."""
    def one(n: int) -> str:
        return f"{n:,}" if n < 100_000 else f"{n / 1e6:.2f}M"

    share = f" ({100 * trainable / total:.2g}%)" if 0 < trainable < total else ""
    return f"{one(trainable)} of {one(total)} parameters train{share}"


def initial_freeze(mcfg) -> str:
    """The --freeze spec to apply before the optimizer is built: none under --freeze-epochs, so every
    parameter is in the optimizer when the network is unfrozen later."""
    if getattr(mcfg, "freeze_epochs", 0) < 0:
        raise UsageError(f"--freeze-epochs {mcfg.freeze_epochs}: use 0 (off) or a number of epochs >= 1")
    return "none" if getattr(mcfg, "freeze_epochs", 0) > 0 else mcfg.freeze


def freeze_for_epoch(mcfg, epoch: int) -> str:
    """The --freeze spec in force during 0-based ``epoch``."""
    n = getattr(mcfg, "freeze_epochs", 0)
    if n <= 0:
        return mcfg.freeze
    if epoch < n:
        return mcfg.freeze if parse_freeze(mcfg.freeze)[0] != "none" else "head"
    return "none"


def set_epoch_freeze(model: torch.nn.Module, mcfg, epoch: int, keep_eval: List[torch.nn.Module]) -> str:
    """Under --freeze-epochs, set requires_grad (and the BatchNorms kept in eval, in place) for
    ``epoch``; returns a log line when that changed the model, else ''."""
    if getattr(mcfg, "freeze_epochs", 0) <= 0:
        return ""
    spec = freeze_for_epoch(mcfg, epoch)
    before = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = apply_freeze(model, spec)
    keep_eval[:] = frozen_batchnorms(model, mcfg.bn_eval)
    if before == [p.requires_grad for p in model.parameters()]:
        return ""
    trainable, total = count_params(model)
    if frozen:
        return (f"epoch {epoch + 1}: --freeze {spec} for the first {mcfg.freeze_epochs} epoch(s) "
                f"(--freeze-epochs): {format_params(trainable, total)}")
    return f"epoch {epoch + 1}: unfrozen after {mcfg.freeze_epochs} epoch(s): {format_params(trainable, total)}"
