"""The fvt checkpoint: format, atomic writes, loading and keep-top-k.

A checkpoint is a dict of tensors and plain Python types only, so it loads with
``torch.load(weights_only=True)``. Keys (docs/architecture.md): fvt_version, model_name,
model_kwargs, state_dict, state_dict_ema (optional), classes, preprocessing, config,
epoch, step, metrics, optimizer, scheduler, scaler, rng, sampler. fvt also adds
``best_history`` (the keep-top-k ranking) and ``epoch_complete``; readers ignore extra keys.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import torch

from ..errors import CheckpointError, OutputError

PathLike = Union[str, Path]


@contextlib.contextmanager
def sigint_deferred():
    """Hold Ctrl-C until the block ends, then raise KeyboardInterrupt: an interrupt inside torch.save
    would otherwise surface as the zip writer's own error instead of a clean stop. Inside a training the
    run's guard holds it instead (fvt.engine.interrupts), so that a write inside a longer held moment
    (an epoch's closing) does not end that moment half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from .interrupts import active

    guard = active()
    if guard.installed:
        with guard.held():
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


def atomic_save(obj: Any, path: PathLike, shown_as: Optional[PathLike] = None) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path``.

    A crash (or SIGKILL) at any moment leaves either the old file or the new one, never a torn one;
    a Ctrl-C during the write is held until the file is in place. A full disk is an OutputError
    naming ``shown_as`` (default ``path``), the space needed, and whether an earlier file is intact."""
    with sigint_deferred():
        _atomic_save(obj, path, Path(shown_as or path))


def _atomic_save(obj: Any, path: PathLike, shown_as: Path) -> None:
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _is_disk_full(e):
            raise OutputError(_disk_full_message(obj, shown_as)) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _is_disk_full(e: BaseException) -> bool:
    """torch.save wraps the failed write in a RuntimeError (zip writer); find the OS error in the chain or text."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(e, RuntimeError) and ("No space left" in str(e) or "file write failed" in str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _disk_full_message(obj: Any, path: Path) -> str:
    """D2: one line: which file, how much space it needs, that the previous file is intact."""
    need = _tensor_bytes(obj) / 2**20
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MB free"
    except OSError:
        free = "free space unknown"
    kept = f"the previous {path.name} is intact" if path.exists() else f"no earlier {path.name} existed"
    # --resume auto needs a last.pt; before the first one there is nothing to continue: start over
    then = ("continue with --resume auto" if (path.parent / "last.pt").is_file() else
            "run the same command again with --exist-ok (no last.pt was written yet, so there is nothing to resume)")
    return (f"disk full writing {path}: it needs about {need:.1f} MB ({free} on that file system); "
            f"{kept}. Free space (or move --output) and {then}")


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


# D5: the one place that says what a resumable checkpoint holds. key -> (accepted types, what to say)
_RESUME_SCHEMA = {
    "model_name": ((str,), "a model name"),
    "state_dict": ((dict,), "a dict of tensors"),
    "state_dict_ema": ((dict, type(None)), "a dict of tensors or none"),
    "classes": ((list, tuple), "a list of class names"),
    "config": ((dict,), "the run's config as a dict"),
    "epoch": ((int,), "an integer"),
    "step": ((int,), "an integer"),
    "metrics": ((dict,), "a dict"),
    "optimizer": ((dict,), "an optimizer state dict"),
    "scheduler": ((dict, type(None)), "a scheduler state dict or none"),
    "scaler": ((dict, type(None)), "a GradScaler state dict or none"),
    "rng": ((dict, type(None)), "RNG states"),
    "sampler": ((dict, type(None)), "the sampler position"),
}


def validate_for_resume(ckpt: dict, path: PathLike) -> dict:
    """D5: check the structure a resume relies on, once, before anything is built; a malformed
    checkpoint is one CheckpointError naming the key instead of a traceback deep in the set-up."""
    def bad(key: str, want: str) -> CheckpointError:
        got = type(ckpt.get(key)).__name__ if key in ckpt else "missing"
        return CheckpointError(f"{path} cannot be resumed: '{key}' should be {want}, found {got}")

    for key, (types, want) in _RESUME_SCHEMA.items():
        if key not in ckpt or not isinstance(ckpt[key], types) or isinstance(ckpt[key], bool):
            raise bad(key, want)
    for key in ("state_dict", "state_dict_ema"):
        sd = ckpt[key] or {}
        if not sd and key == "state_dict" or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
            raise bad(key, "a non-empty dict of name -> tensor")
    torn = next((f"{key}.{k}" for key in ("state_dict", "state_dict_ema") for k, v in (ckpt[key] or {}).items()
                 if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if torn:  # a diverged state would diverge again, and say so only after the set-up
        raise CheckpointError(f"{path} cannot be resumed: its weights are not finite (NaN or inf in {torn}); "
                              "resume from an earlier checkpoint, or start again with a lower --lr")
    opt = ckpt["optimizer"]
    if not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise bad("optimizer", "an optimizer state dict (state, param_groups)")
    rng = ckpt["rng"]
    if rng is not None:
        py, np_state = rng.get("python"), rng.get("numpy")
        ok = (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple))
              and isinstance(np_state, dict) and isinstance(np_state.get("keys"), torch.Tensor)
              and isinstance(rng.get("torch"), torch.Tensor) and rng["torch"].dtype == torch.uint8)
        if not ok:
            raise bad("rng", "RNG states (python, numpy, torch)")
    smp = ckpt["sampler"] or {}
    if not all(isinstance(smp.get(k, 0), int) and smp.get(k, 0) >= 0 for k in ("epoch", "start")):
        raise bad("sampler", "non-negative integers epoch and start")
    return ckpt


def selected_weights(ckpt: dict) -> str:
    """Issue 13 item 2: "ema" or "raw", the weights this checkpoint's metrics and best-selection came from,
    and so the weights eval / predict / export serve by default (--ema / --raw override).

    Checkpoints from before the field existed: EMA when they were selected by an EMA metric and hold EMA
    weights, else raw."""
    choice = ckpt.get("selected_weights")
    if choice not in ("ema", "raw"):
        best = ((ckpt.get("config") or {}).get("train") or {}).get("best_metric")
        choice = "ema" if best in ("ema_top1", "ema_map") else "raw"
    return "ema" if choice == "ema" and ckpt.get("state_dict_ema") is not None else "raw"


def weights_to_serve(ckpt: dict, choice: Optional[str] = None) -> Tuple[dict, str]:
    """(state_dict, "ema"|"raw"): ``choice`` if given (--ema / --raw), else :func:`selected_weights`."""
    choice = choice or selected_weights(ckpt)
    if choice == "ema":
        if ckpt.get("state_dict_ema") is None:
            raise CheckpointError("--ema: this checkpoint holds no EMA weights (trained with --no-ema); use --raw")
        return ckpt["state_dict_ema"], "ema"
    return ckpt["state_dict"], "raw"


def check_resumable(ckpt: dict, path: PathLike, model_name: str, classes: Optional[List[str]]) -> None:
    """Refuse to resume a run of another model or class list (None: not known yet), naming both sides."""
    if ckpt.get("model_name") != model_name:
        raise CheckpointError(f"{path} was trained with model {ckpt.get('model_name')!r}, not {model_name!r}; "
                              f"pass --model {ckpt.get('model_name')} or another --output")
    old = list(ckpt.get("classes") or [])
    if classes is not None and old and old != list(classes):
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
        pos = self.position(value) if math.isfinite(value) else None  # D17: never a non-finite best
        if pos is None:
            return None
        history = self.history[:pos] + [(float(value), int(epoch))] + self.history[pos:]
        # written under a temporary name first: a failed write (disk full) must not cost the older files
        staged = self.dir / ".best-new.pt"
        atomic_save(dict(ckpt, best_history=[list(h) for h in history[: self.k]]), staged, self.dir / self.name(pos))
        dropped = history[self.k:]
        self.history = history[: self.k]
        if dropped and (self.dir / self.name(self.k - 1)).exists():
            (self.dir / self.name(self.k - 1)).unlink()
        for r in range(min(len(self.history), self.k) - 1, pos, -1):  # shift the worse ones down
            src = self.dir / self.name(r - 1)
            if src.exists():
                os.replace(src, self.dir / self.name(r))
        os.replace(staged, self.dir / self.name(pos))
        return pos
