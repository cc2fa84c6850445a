"""The fvt checkpoint: format, atomic writes, loading and keep-top-k.

A checkpoint is a dict of tensors and plain Python types only, so it loads with
``torch.load(weights_only=True)``. Keys (docs/architecture.md): fvt_version, model_name,
model_kwargs, state_dict, state_dict_ema (optional), classes, preprocessing, config,
epoch, step, metrics, optimizer, scheduler, scaler, rng, sampler. fvt also adds
``best_history`` (the keep-top-k ranking) and ``epoch_complete``; readers ignore extra keys.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import torch

from ..errors import CheckpointError

PathLike = Union[str, Path]


@contextlib.contextmanager
def sigint_deferred():
    """Hold Ctrl-C until the block ends, then raise KeyboardInterrupt: an interrupt inside torch.save
    would otherwise surface as the zip writer's own error instead of a clean stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def atomic_save(obj: Any, path: PathLike) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (or SIGKILL) at any moment leaves either the old file or the new one, never a torn one;
    a Ctrl-C during the write is held until the file is in place."""
    with sigint_deferred():
        _atomic_save(obj, path)


def _atomic_save(obj: Any, path: PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file like any other output
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path: PathLike) -> dict:
    """Load an fvt checkpoint safely (weights_only); a missing or foreign file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        from ..models.checkpoint import safe_load
    except ImportError:  # models stage not importable: same policy, done here
        safe_load = None
    if safe_load is not None:
        ckpt = safe_load(path)
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot load {path} safely: {str(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model_name" not in ckpt:
        raise CheckpointError(f"{path} is not an fvt checkpoint (no model_name/state_dict); "
                              "use --pretrained for weights from elsewhere")
    return ckpt


def check_resumable(ckpt: dict, path: PathLike, model_name: str, classes: List[str]) -> None:
    """Refuse to resume a run of another model or class list, naming both sides."""
    if ckpt.get("model_name") != model_name:
        raise CheckpointError(f"{path} was trained with model {ckpt.get('model_name')!r}, not {model_name!r}; "
                              f"pass --model {ckpt.get('model_name')} or another --output")
    old = list(ckpt.get("classes") or [])
    if old and old != list(classes):
        missing, extra = sorted(set(old) - set(classes)), sorted(set(classes) - set(old))
        raise CheckpointError(f"{path} was trained on other classes (only in checkpoint: {missing[:5]}, "
                              f"only in data: {extra[:5]}); use another --output")


class TopK:
    """Keep the k best checkpoints: best.pt, best-2.pt, ... best-k.pt, ranked by a metric."""

    def __init__(self, run_dir: PathLike, k: int, higher_is_better: bool, history: Optional[list] = None):
        self.dir, self.k, self.higher = Path(run_dir), max(1, int(k)), higher_is_better
        self.history: List[Tuple[float, int]] = [tuple(h) for h in (history or [])]

    @staticmethod
    def name(rank: int) -> str:
        return "best.pt" if rank == 0 else f"best-{rank + 1}.pt"

    def best(self) -> Optional[float]:
        return self.history[0][0] if self.history else None

    def position(self, value: float) -> Optional[int]:
        """Rank a new value would take, or None if it does not make the top k (ties keep the older)."""
        for i, (v, _) in enumerate(self.history):
            if (value > v) if self.higher else (value < v):
                return i
        return len(self.history) if len(self.history) < self.k else None

    def add(self, value: float, epoch: int, ckpt: dict) -> Optional[int]:
        pos = self.position(value)
        if pos is None:
            return None
        self.history.insert(pos, (float(value), int(epoch)))
        dropped = self.history[self.k:]
        self.history = self.history[: self.k]
        if dropped and (self.dir / self.name(self.k - 1)).exists():
            (self.dir / self.name(self.k - 1)).unlink()
        for r in range(min(len(self.history), self.k) - 1, pos, -1):  # shift the worse ones down
            src = self.dir / self.name(r - 1)
            if src.exists():
                os.replace(src, self.dir / self.name(r))
        ckpt = dict(ckpt, best_history=[list(h) for h in self.history])
        atomic_save(ckpt, self.dir / self.name(pos))
        return pos
