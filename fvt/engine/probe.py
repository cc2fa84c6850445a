"""The throughput probe behind ``--time`` and ``--compile auto``: what one epoch of this run will cost
on this machine, measured in a few seconds before the first epoch.

It times, on a copy of the model (the run's weights, optimizer and random streams stay untouched):
a full training step (forward, loss, backward, optimizer update; ``fvt.models.speed.make_step``, the
step ``fvt bench`` times) at every training size of the run, an evaluation forward at the
evaluation size, loading + augmenting a few training and validation images as a DataLoader
worker does (from the cache when there is one), and one checkpoint write. Like the ``--amp auto``
probe (``fvt.engine.precision``) it runs one untimed warm-up call first (kernel selection,
allocations) and keeps the best repetitions.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ..models.speed import make_step, sync
from .progressive import ProgressiveModel
from .rng import get_rng_state, set_rng_state


@dataclass
class Probe:
    step_s: Dict[int, float] = field(default_factory=dict)  # one training step (a batch) per training size
    eval_step_s: float = 0.0        # one evaluation batch, per network evaluated (model, EMA)
    data_train_s: float = 0.0       # loading + augmenting one training image, one process
    data_val_s: float = 0.0
    save_s: float = 0.0             # one checkpoint write (last.pt)
    wall_s: float = 0.0             # what the probe itself took

    def to_dict(self) -> dict:
        return {"step_s": {str(k): v for k, v in self.step_s.items()}, "eval_step_s": self.eval_step_s,
                "data_train_s": self.data_train_s, "data_val_s": self.data_val_s, "save_s": self.save_s,
                "wall_s": self.wall_s}

    @classmethod
    def from_dict(cls, d: dict) -> "Probe":
        d = dict(d or {})
        d["step_s"] = {int(k): float(v) for k, v in (d.get("step_s") or {}).items()}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _amp_name(dtype: Optional[torch.dtype]) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "none")


def _time(fn, device: torch.device, min_total: float = 0.3, max_reps: int = 5, slow: float = 2.0) -> float:
    """Median seconds of ``fn()`` after one untimed call; 2 repetitions (1 when the untimed call took
    over ``slow`` seconds: a large model, the probe must stay short), more while under ``min_total``
    seconds (tiny models), at most ``max_reps``."""
    t = time.perf_counter()
    fn()
    need = 1 if time.perf_counter() - t > slow else 2
    times: List[float] = []
    while len(times) < need or (sum(times) < min_total and len(times) < max_reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _data_time(dataset, keys: list) -> float:
    if dataset is None or not keys:
        return 0.0
    t = time.perf_counter()
    try:
        for k in keys:
            dataset[k]
    except (NotImplementedError, TypeError):  # a stream (shards): its cost shows in the first epoch
        return 0.0
    return (time.perf_counter() - t) / len(keys)


def _spread(n: int, k: int) -> List[int]:
    return sorted({int(i * n / k) for i in range(k)}) if n else []


def measure(run, sizes: List[int]) -> Probe:
    """Time one epoch's parts for ``run`` (see the module docstring); ``sizes``: its training sizes."""
    t0 = time.perf_counter()
    cfg, dev = run.cfg, run.dist.device
    amp = _amp_name(run.amp_dtype)
    fmt = torch.channels_last if cfg.model.channels_last else torch.contiguous_format
    rng = get_rng_state()
    probe = Probe()
    try:
        twin = copy.deepcopy(run.core)
        net = ProgressiveModel(twin)
        bs = cfg.data.batch_size
        for s in sorted(set(sizes)):
            x = torch.randn(bs, 3, s, s, device=dev).contiguous(memory_format=fmt)
            probe.step_s[s] = _time(make_step(twin, x, "train", amp, dev, net=net), dev)
        eval_bs = cfg.data.eval_batch_size or 2 * bs
        h, w = run.data.preprocessing.input_size
        x = torch.randn(eval_bs, 3, h, w, device=dev).contiguous(memory_format=fmt)
        probe.eval_step_s = _time(make_step(twin, x, "eval", amp, dev), dev)
        probe.save_s = _save_time(twin, run.run_dir)
        del twin, net
        train_ds, val_ds = run.train_loader.dataset, run.val_loader.dataset if run.val_loader else None
        probe.data_train_s = _data_time(train_ds, [(i, i) for i in _spread(len(train_ds), 16)])
        probe.data_val_s = _data_time(val_ds, _spread(len(val_ds), 8) if val_ds is not None else [])
    finally:
        set_rng_state(rng)
    probe.wall_s = time.perf_counter() - t0
    return probe


def _save_time(model: torch.nn.Module, run_dir) -> float:
    """One write of what last.pt holds: weights, EMA weights and two optimizer moments, ~4x the weights
    (timed once for the weights, then scaled)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=run_dir if os.path.isdir(run_dir) else None)
    try:
        t = time.perf_counter()
        with os.fdopen(fd, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())
        return 4 * (time.perf_counter() - t)
    finally:
        os.unlink(tmp)
