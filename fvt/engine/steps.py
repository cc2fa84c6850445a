"""One training epoch: forward/backward with AMP, accumulation, SAM, clipping, EMA, SophiaG refresh.

Everything a step needs lives in :class:`TrainState` so that the trainer can checkpoint it
between optimizer steps (the only points where a checkpoint is consistent).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..errors import TrainingDiverged  # noqa: F401 - raised here, exit code 3
from . import distributed as D
from . import interrupts
from .distill import distillation_loss, teacher_logits
from .evaluate import autocast_context
from .optim import current_lr
from .rng import iter_keeping_rng
from .sam import ascend, bn_stats_frozen, descend_back
from .sophia import SophiaG, refresh_hessian
from .transfer import set_train_mode


@dataclass
class TrainState:
    epoch: int = 0            # epochs completed
    step: int = 0             # optimizer steps completed
    position: int = 0         # samples of this rank consumed in the current epoch
    best_history: list = field(default_factory=list)
    bad_evals: int = 0        # evaluations without improvement (early stopping)
    last_metrics: dict = field(default_factory=dict)
    loss_sum: float = 0.0     # D25: running train-loss sum / sample count of the current epoch (this rank),
    loss_count: int = 0       # saved in mid-epoch checkpoints so a resumed epoch's train_loss covers all of it


@dataclass
class StepParts:
    model: torch.nn.Module            # what is called (DDP / compiled wrapper)
    core: torch.nn.Module             # the plain model
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[torch.amp.GradScaler]
    ema: Any
    criterion: Callable
    mixup: Optional[Callable]
    teacher: Any
    keep_eval_bn: list
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    cfg: Any
    student_mean: torch.Tensor
    student_std: torch.Tensor


def progress_bar_wanted() -> bool:
    """A live bar on a terminal or in a notebook; elsewhere (nohup, Slurm, a log file) the trainer prints a
    line every --log-every steps instead. FVT_PROGRESS=off|on overrides the guess."""
    choice = os.environ.get("FVT_PROGRESS", "auto")
    if choice in ("off", "on"):
        return choice == "on"
    return sys.stderr.isatty() or _in_notebook()


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def _kill_hook(step: int) -> None:
    # Test hook for crash recovery: FVT_KILL_AFTER_STEP=N SIGKILLs this process after step N.
    target = os.environ.get("FVT_KILL_AFTER_STEP")
    if target and int(target) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def train_one_epoch(p: StepParts, loader, state: TrainState, on_step: Callable[[], None],
                    log_step: Callable[[dict], None], is_main: bool,
                    each_step: Optional[Callable[[dict], None]] = None) -> dict:
    """Train until the loader is exhausted or max_steps; returns mean loss, img/s, samples.

    After every optimizer step: ``each_step(record)`` (if given), ``log_step(record)`` every
    ``log_every`` steps, then ``on_step()``; record = step, epoch, loss (running mean), lr, img_per_s."""
    cfg = p.cfg
    accum = max(1, cfg.optim.accum_steps)
    bs = cfg.data.batch_size
    set_train_mode(p.model, p.keep_eval_bn)
    ddp = isinstance(p.model, torch.nn.parallel.DistributedDataParallel)
    total_batches = len(loader)
    bar = None
    if is_main and progress_bar_wanted():
        from tqdm.auto import tqdm  # a widget in Jupyter, a text bar on a terminal

        bar = tqdm(total=total_batches, desc=f"epoch {state.epoch + 1}", leave=False, dynamic_ncols=True)
    seen, t0 = 0, time.perf_counter()
    micro, position0 = 0, state.position
    batches = 0
    remaining = len(loader.batch_sampler.sampler)  # this rank's samples left in the epoch
    last_images = None
    guard = interrupts.active()  # a Ctrl-C inside a step waits for the step's end: last.pt stays consistent
    with guard.held():  # (the loader's hidden seed draw is not to be cut in two either)
        batch_iter = iter_keeping_rng(loader)
    for batch in batch_iter:
        batches += 1
        micro += 1
        if micro == 1:
            guard.hold()  # released after the step's bookkeeping and periodic save (on_step)
        final = micro == accum or batches == total_batches
        if batch is not None and batch[0].shape[0] < 2:
            batch = None  # files that failed to decode left one sample: BatchNorm cannot train on it
        if batch is not None:
            images, targets = batch[0].to(p.device, non_blocking=True), batch[1].to(p.device, non_blocking=True)
            if cfg.model.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            soft = targets
            if p.mixup is not None:
                images, soft = p.mixup(images, targets)
            sync = contextlib.nullcontext() if (final or not ddp) else p.model.no_sync()
            with sync:
                loss, t_out = _forward_loss(p, images, soft)
                _check_finite(loss, state, batches)
                scaled = loss / accum
                (p.scaler.scale(scaled) if p.scaler is not None else scaled).backward()
            if final and cfg.optim.sam_rho > 0:
                _sam_second_pass(p, images, soft, t_out, state, batches)
            state.loss_sum += float(loss.detach()) * images.shape[0]
            state.loss_count += images.shape[0]
            seen += images.shape[0]
            last_images = images
        if not final:
            continue
        micro = 0
        _optimizer_step(p, state)
        if isinstance(p.optimizer, SophiaG) and last_images is not None and state.step % max(1, cfg.optim.hess_interval) == 0:
            scale = float(p.scaler.get_scale()) if p.scaler is not None else None
            refresh_hessian(p.model, p.optimizer, last_images, autocast_context(p.device, p.amp_dtype), scale)
        state.position = position0 + min(batches * bs, remaining)
        lr = current_lr(p.optimizer)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        if bar is not None:
            bar.update(batches - bar.n)
            bar.set_postfix(loss=f"{state.loss_sum / max(state.loss_count, 1):.4f}", lr=f"{lr:.2e}", ips=f"{seen * D.get_world_size() / elapsed:.0f}")
        record = {"step": state.step, "epoch": state.epoch + 1, "loss": state.loss_sum / max(state.loss_count, 1), "lr": lr,
                  "img_per_s": seen * D.get_world_size() / elapsed}
        if each_step is not None:
            each_step(record)
        if cfg.train.log_every and state.step % cfg.train.log_every == 0:
            log_step(record)
        on_step()
        guard.release()  # a Ctrl-C held during the step stops the run here
        _kill_hook(state.step)
        if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
            break
    if bar is not None:
        bar.close()
    elapsed = max(time.perf_counter() - t0, 1e-9)
    stats = torch.tensor([state.loss_sum, float(state.loss_count), float(seen)], dtype=torch.float64)
    stats = D.all_reduce_sum(stats)
    return {"train_loss": float(stats[0] / max(stats[1], 1)), "img_per_s": float(stats[2]) / elapsed,
            "samples": int(stats[2])}


def _forward_loss(p: StepParts, images: torch.Tensor, soft: torch.Tensor, t_out: Optional[torch.Tensor] = None):
    """Loss of the model on one batch (plus distillation); returns it with the teacher's logits."""
    cfg = p.cfg
    with autocast_context(p.device, p.amp_dtype):
        out = p.model(images)
        loss = p.criterion(out.float(), soft)
        if p.teacher is not None:
            if t_out is None:
                t_out = teacher_logits(p.teacher, images, p.student_mean, p.student_std)
            loss = distillation_loss(out, t_out, loss, cfg.distill.distill, cfg.distill.distill_alpha,
                                     cfg.distill.distill_tau)
    return loss, t_out


def _sam_second_pass(p: StepParts, images, soft, t_out, state: TrainState, batch: int) -> None:
    """SAM: replace the gradient at w by the one at w + e (same batch, same augmentation)."""
    params = [q for q in p.core.parameters() if q.requires_grad]
    moved = ascend(params, p.cfg.optim.sam_rho, p.cfg.optim.sam_adaptive)
    p.optimizer.zero_grad(set_to_none=True)
    try:
        with bn_stats_frozen(p.core):
            loss, _ = _forward_loss(p, images, soft, t_out)
            _check_finite(loss, state, batch)
            (p.scaler.scale(loss) if p.scaler is not None else loss).backward()
    finally:
        descend_back(moved)


def _check_finite(loss: torch.Tensor, state: TrainState, batch: int) -> None:
    bad = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0])
    if D.get_world_size() > 1:
        bad = D.all_reduce_max(bad)  # every rank stops together
    if bad.item():
        raise TrainingDiverged(
            f"non-finite loss ({float(loss.detach())}) at step {state.step + 1} (epoch {state.epoch + 1}, batch {batch}); "
            "try a lower --lr, --clip-grad 1.0 or --amp none")


def _optimizer_step(p: StepParts, state: TrainState) -> None:
    cfg = p.cfg
    if cfg.optim.clip_grad is not None:
        from timm.utils import dispatch_clip_grad

        if p.scaler is not None:
            p.scaler.unscale_(p.optimizer)
        params = [q for q in p.core.parameters() if q.requires_grad]
        dispatch_clip_grad(params, value=cfg.optim.clip_grad, mode=cfg.optim.clip_mode)
    if p.scaler is not None:
        p.scaler.step(p.optimizer)
        p.scaler.update()
    else:
        p.optimizer.step()
    p.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    if p.ema is not None:
        p.ema.update(p.core, step=state.step)
    if p.scheduler is not None:
        p.scheduler.step_update(num_updates=state.step)


def finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else float("nan")
