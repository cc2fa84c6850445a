"""``--progressive START:END``: train at a lower resolution first, at END at the end (FFCV / fastai style).

Schedule (a function of the epoch and the run's length only, so an exact resume lands on the same
size): epochs in the first ``RAMP_FROM`` of the run train at START; the size then grows linearly
with the epoch to END, reached at ``RAMP_TO`` of the run; the rest trains at END. Each epoch's size
is rounded down to the nearest *allowed* size: a multiple of ``STEP`` pixels (plus START and END)
at which the model plans the same parameters as at ``--img-size`` (fvt.models.windows chooses the
windows per size; a size at which a stage gains or loses its carrier tokens would leave
parameters untrained). Evaluation always runs at ``--img-size``.

Batch size and learning rate do not change with the size: the steps per epoch stay the same, so
the per-step lr schedule (warm-up, cosine) is exactly that of a run without progressive resizing;
small images only make the early steps cheaper.

The model: one set of weights (the model built at ``--img-size``, which the optimizer, EMA and
checkpoints hold) and, per other size, a *view*: the same variant planned for that size, whose
parameters and BatchNorm statistics are the model's own tensors. Views are built without drawing
random numbers, so a resumed run's random streams stay those of the uninterrupted run.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UsageError
from .rng import get_rng_state, set_rng_state

RAMP_FROM, RAMP_TO = 0.25, 0.75
STEP = 16
_BN_STATE = ("running_mean", "running_var", "num_batches_tracked")


def parse_progressive(spec: str) -> Tuple[int, int]:
    """``"64:96"`` -> (64, 96)."""
    try:
        start, end = (int(v) for v in str(spec).split(":"))
    except ValueError:
        raise UsageError(f"--progressive {spec}: expected START:END in pixels, e.g. 64:96") from None
    if not 16 <= start <= end:
        raise UsageError(f"--progressive {spec}: START must be >= 16 and at most END")
    return start, end


@functools.lru_cache(maxsize=64)
def _structure(name: str, size: int, drop_path: Optional[float]) -> Optional[tuple]:
    """The parameter names and shapes of ``name`` planned at ``size`` px (None: cannot be windowed)."""
    from ..models.registry import build_model

    try:
        with torch.device("meta"):
            m = build_model(name, num_classes=2, img_size=[size, size], drop_path_rate=drop_path)
    except UsageError:
        return None
    return tuple((k, tuple(p.shape)) for k, p in m.named_parameters())


def allowed_sizes(name: str, img_size: int, start: int, end: int, drop_path: Optional[float] = None) -> List[int]:
    """Sizes in [start, end] (multiples of STEP, and the ends) with the parameters of ``img_size``."""
    ref = _structure(name, img_size, drop_path)
    cands = sorted({start, end, *range(math.ceil(start / STEP) * STEP, end + 1, STEP)})
    return [s for s in cands if _structure(name, s, drop_path) == ref]


def check_progressive(cfg) -> Optional[List[int]]:
    """The allowed sizes for the config's --progressive, or None when it is off; a UsageError names
    the sizes that would work when START or END would change the model's parameters."""
    spec = cfg.sched.progressive
    if not spec:
        return None
    start, end = parse_progressive(spec)
    size = cfg.model.img_size
    if size is None:  # checked before validate_config fills in the variant's own size
        from ..models import model_info

        size = list(model_info(cfg.model.model)["input_size"][1:])
    h, w = (list(size) * 2)[:2]
    if h != w:
        raise UsageError(f"--progressive needs a square --img-size (got {h} {w})")
    ok = allowed_sizes(cfg.model.model, h, start, end, cfg.model.drop_path_rate)
    bad = [s for s in (start, end) if s not in ok]
    if bad:
        wide = allowed_sizes(cfg.model.model, h, STEP * 2, max(end, h), cfg.model.drop_path_rate)
        raise UsageError(f"--progressive {spec}: {cfg.model.model} at {bad[0]} px has other parameters than at "
                         f"--img-size {h} (its windows or carrier tokens differ); sizes that work: "
                         f"{', '.join(map(str, wide)) or 'none'}")
    return ok


def size_schedule(start: int, end: int, epochs: int, allowed: List[int]) -> List[int]:
    """The training size of each epoch (see the module docstring)."""
    sizes = []
    for e in range(epochs):
        p = e / max(epochs - 1, 1)
        frac = min(1.0, max(0.0, (p - RAMP_FROM) / (RAMP_TO - RAMP_FROM)))
        target = start + (end - start) * frac
        sizes.append(max(s for s in allowed if s <= target + 1e-9))
    return sizes


def describe(sizes: List[int]) -> str:
    """``64 px x 6 epochs, 80 px x 3, 96 px x 7``."""
    runs: List[List[int]] = []
    for s in sizes:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return ", ".join(f"{s} px x {n}" for s, n in runs)


# -- the model ------------------------------------------------------------------------------------
def _tie(view: nn.Module, core: nn.Module) -> List[tuple]:
    """Make ``view`` use ``core``'s parameters and BatchNorm statistics; returns the module pairs."""
    core_mods = dict(core.named_modules())
    pairs = []
    for name, m in view.named_modules():
        src = core_mods[name]
        for pname, _ in list(m.named_parameters(recurse=False)):
            setattr(m, pname, getattr(src, pname))
        if isinstance(m, _BatchNorm):
            for b in _BN_STATE:
                if m._buffers.get(b) is not None:
                    m._buffers[b] = src._buffers[b]
        pairs.append((src, m))
    return pairs


def _sync(pairs: List[tuple]) -> None:
    """Training mode, BatchNorm momentum (SAM freezes it) and gradient checkpointing follow the core."""
    for src, dst in pairs:
        dst.training = src.training
        if isinstance(src, _BatchNorm):
            dst.momentum = src.momentum
        if hasattr(src, "grad_checkpointing"):
            dst.grad_checkpointing = src.grad_checkpointing


def build_view(core: nn.Module, size: int) -> nn.Module:
    """``core``'s variant planned for ``size`` px, sharing its weights (no random numbers drawn)."""
    from ..models import create_model

    kw = dict(getattr(core, "model_kwargs", {}) or {}, img_size=[size, size], window_size=None)
    state = get_rng_state()
    try:
        view = create_model(core.model_name, **kw)
    finally:
        set_rng_state(state)
    if any(isinstance(m, nn.SyncBatchNorm) for m in core.modules()):  # --sync-bn: the view's statistics too
        view = nn.SyncBatchNorm.convert_sync_batchnorm(view)
    device = next(core.parameters()).device
    return view.to(device)


class ProgressiveModel(nn.Module):
    """Runs ``core`` on images of its own size and a view of it on any other size.

    ``core`` is the only registered submodule, so ``parameters()``, DDP and ``train()`` see exactly
    the core's weights; ``compile_fn`` (e.g. torch.compile) is applied to each size's module."""

    def __init__(self, core: nn.Module, compile_fn: Optional[Callable] = None):
        super().__init__()
        self.core = core
        self._compile = compile_fn or (lambda m: m)
        self._calls: Dict[tuple, Callable] = {tuple(core.img_size): self._compile(core)}
        self._pairs: Dict[tuple, List[tuple]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hw = tuple(x.shape[-2:])
        if hw not in self._calls:
            if hw[0] != hw[1]:
                raise ValueError(f"progressive resizing runs square images; got {hw}")
            view = build_view(self.core, hw[0])
            self._pairs[hw] = _tie(view, self.core)
            self._calls[hw] = self._compile(view)
        if hw in self._pairs:
            _sync(self._pairs[hw])
        return self._calls[hw](x)
