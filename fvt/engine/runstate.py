"""The state of one training run: what its phases share (:class:`Run`), how it becomes a checkpoint,
how it comes back from one (resume), and what the run says about itself (progress, divergence, summary).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch

from .. import __version__
from ..config import Config
from ..errors import CheckpointError
from . import distributed as D
from .checkpoint import TopK, atomic_save, check_resumable
from .optim import current_lr, load_scheduler_state, scheduler_state
from .rng import get_rng_state, set_rng_state
from .runlog import RunLogger
from .start import StartPlan
from .steps import StepParts, TrainState

BEST_KEYS = {"top1": "val_top1", "top5": "val_top5", "loss": "val_loss", "ema_top1": "ema_val_top1",
             "balanced_accuracy": "val_balanced_accuracy", "macro_f1": "val_macro_f1"}


@dataclass
class Run:
    """What the phases of one training share (built by set-up, advanced by the epoch loop)."""

    cfg: Config
    dist: D.DistInfo
    run_dir: Path
    plan: StartPlan
    callbacks: List[Any] = field(default_factory=list)
    logger: Optional[RunLogger] = None  # opened once the set-up succeeded: a failed start leaves no logs
    data: Any = None
    model: Any = None                  # what is called (compiled / DDP wrapper)
    core: Any = None                   # the plain model: state_dict, EMA, checkpoints
    ema: Any = None
    amp_dtype: Optional[torch.dtype] = None
    train_loader: Any = None
    val_loader: Any = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    criterion: Any = None
    mixup: Any = None
    teacher: Any = None
    keep_eval_bn: list = field(default_factory=list)  # frozen BatchNorms that stay in eval mode
    epochs: int = 0
    updates_per_epoch: int = 1
    lr: float = 0.0
    global_batch: int = 0
    trainable: int = 0
    frozen_count: int = 0               # tensors frozen at the start (--freeze / --freeze-epochs)
    load_report: Any = None             # what --pretrained loaded (fvt.models.checkpoint.LoadReport)
    parts: Optional[StepParts] = None
    topk: Optional[TopK] = None
    state: TrainState = field(default_factory=TrainState)
    last_saved: Optional[str] = None    # what last.pt holds ("step 12, epoch 3 done"), for D17's message
    t_start: float = field(default_factory=time.time)
    loop_start: Optional[tuple] = None  # (time, step) when the epoch loop began: the ETA's pace

    @property
    def resume(self) -> Optional[Path]:
        return self.plan.resume

    def log(self, msg: str) -> None:
        if not self.dist.is_main:
            return
        if self.logger is not None:
            self.logger.print(msg)
        else:
            from tqdm import tqdm

            tqdm.write(msg)

    def notify(self, hook: str, record: dict) -> None:
        """Call ``hook`` (on_step / on_epoch_end) on every callback that has it (main process only)."""
        if not self.dist.is_main:
            return
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(dict(record))


# -- checkpoints -----------------------------------------------------------------------------------------
def selection_weights(run: Run) -> str:
    """Item 2: "ema" when best.pt is chosen by an EMA metric (and EMA is on), else "raw"."""
    return "ema" if BEST_KEYS[run.cfg.train.best_metric].startswith("ema_") and run.ema is not None else "raw"


def checkpoint_dict(run: Run, epoch_complete: bool) -> dict:
    """The checkpoint (format: fvt.engine.checkpoint) of the run as it stands."""
    s, core, ema = run.state, run.core, run.ema
    return {
        "fvt_version": __version__, "model_name": run.cfg.model.model,
        "model_kwargs": dict(getattr(core, "model_kwargs", {}) or {}),
        "state_dict": core.state_dict(), "state_dict_ema": ema.module.state_dict() if ema is not None else None,
        "selected_weights": selection_weights(run), "selection_metric": BEST_KEYS[run.cfg.train.best_metric],
        "classes": list(run.data.classes), "preprocessing": run.data.preprocessing.to_dict(),
        "config": run.cfg.to_dict(), "epoch": s.epoch, "step": s.step, "metrics": dict(s.last_metrics),
        "optimizer": run.optimizer.state_dict(), "scheduler": scheduler_state(run.scheduler),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None, "rng": get_rng_state(),
        "sampler": {"epoch": s.epoch, "start": 0 if epoch_complete else s.position},
        "epoch_loss": {"sum": 0.0 if epoch_complete else s.loss_sum, "count": 0 if epoch_complete else s.loss_count},
        "best_history": [list(h) for h in run.topk.history], "bad_evals": s.bad_evals,
        "epoch_complete": epoch_complete, "elastic_run_id": D.elastic_run_id(),  # a requeued job resumes by itself
    }


def save_last(run: Run, epoch_complete: bool, gather: bool = True) -> None:
    # every rank's RNG and loss sums travel in the checkpoint, so a DDP resume restores each rank's own
    per_rank = None
    if gather and run.dist.distributed:
        mine = {"rng": get_rng_state(), "loss": {"sum": run.state.loss_sum, "count": run.state.loss_count}}
        per_rank = D.all_gather_objects(mine)
    if run.dist.is_main:
        ck = checkpoint_dict(run, epoch_complete)
        if per_rank is not None:
            ck["rng_per_rank"] = [r["rng"] for r in per_rank]
            if not epoch_complete:
                ck["epoch_loss_per_rank"] = [r["loss"] for r in per_rank]
        atomic_save(ck, run.run_dir / "last.pt")
    s = run.state
    run.last_saved = f"step {s.step}, epoch {s.epoch} done" + ("" if epoch_complete else f" and part of epoch {s.epoch + 1}")


# -- resume ----------------------------------------------------------------------------------------------
def resume_run(run: Run) -> None:
    """Continue from the checkpoint start.plan_start loaded and validated (D5)."""
    cfg, dist, ckpt = run.cfg, run.dist, run.plan.ckpt
    if ckpt is None:
        if cfg.train.resume == "auto":
            run.log(f"--resume auto: no last.pt in {run.run_dir}, starting a new run")
        return
    check_resumable(ckpt, run.resume, cfg.model.model, run.data.classes)
    try:
        run.core.load_state_dict(ckpt["state_dict"])
        if run.ema is not None and ckpt.get("state_dict_ema") is not None:
            run.ema.module.load_state_dict(ckpt["state_dict_ema"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{run.resume} does not fit {cfg.model.model} as configured (img size, classes, "
                              f"--layer-decay, --freeze?): {str(e).splitlines()[0]}") from None
    _resume_schedule(run, ckpt)
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    smp, loss = ckpt.get("sampler") or {}, ckpt.get("epoch_loss") or {}
    run.state = TrainState(epoch=int(smp.get("epoch", ckpt["epoch"])), step=int(ckpt["step"]),
                           position=int(smp.get("start", 0)), best_history=list(ckpt.get("best_history") or []),
                           bad_evals=int(ckpt.get("bad_evals", 0)), last_metrics=dict(ckpt.get("metrics") or {}),
                           loss_sum=float(loss.get("sum", 0.0)), loss_count=int(loss.get("count", 0)))  # D25
    per_rank = ckpt.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == dist.world_size:
        set_rng_state(per_rank[dist.rank])
        losses = ckpt.get("epoch_loss_per_rank")
        if losses is not None and len(losses) == dist.world_size:
            run.state.loss_sum, run.state.loss_count = float(losses[dist.rank]["sum"]), int(losses[dist.rank]["count"])
    elif ckpt.get("rng") is not None and dist.world_size == 1:
        set_rng_state(ckpt["rng"])
    s = run.state
    run.last_saved = f"step {s.step}, epoch {s.epoch} done"
    run.log(f"resumed from {run.resume}: epoch {s.epoch} done, step {s.step}, {s.position} samples into the next")
    run.plan.ckpt = None  # the set-up holds its own copies now


def _resume_schedule(run: Run, ckpt: dict) -> None:
    """F1: a resume with another --epochs rebuilds the schedule for the new length: the lr follows the
    curve a run planned that long from the start would have had at this step (said in the log)."""
    cfg, planned = run.cfg, run.plan.planned_epochs
    if run.scheduler is None:
        return
    if planned is None or planned == cfg.sched.epochs or cfg.sched.sched == "plateau":
        load_scheduler_state(run.scheduler, ckpt.get("scheduler"))
        return
    before = current_lr(run.optimizer)
    run.scheduler.step_update(num_updates=int(ckpt["step"]))
    run.log(f"--epochs {cfg.sched.epochs} (the run was planned for {planned}): the {cfg.sched.sched} schedule is "
            f"rebuilt for {cfg.sched.epochs} epochs, as if planned so from the start; at step {ckpt['step']} the lr "
            f"goes from {before:.3g} to {current_lr(run.optimizer):.3g}")


# -- what the run says -----------------------------------------------------------------------------------
def weights_finite(run: Run) -> list:
    """D17: ["weights"] / ["EMA weights"] when a parameter or buffer is NaN/inf."""
    bad = []
    for name, net in (("weights", run.core), ("EMA weights", run.ema.module if run.ema is not None else None)):
        if net is not None and not all(torch.isfinite(t).all() for t in net.state_dict().values()
                                       if t.is_floating_point()):
            bad.append(name)
    return bad


def what_was_kept(run: Run) -> str:
    """D17: exactly which checkpoints hold what after a divergence."""
    kept = []
    if run.last_saved is not None and (run.run_dir / "last.pt").is_file():
        kept.append(f"{run.run_dir / 'last.pt'} ({run.last_saved})")
    if run.topk is not None and run.topk.history:
        value, epoch = run.topk.history[0]
        kept.append(f"{run.run_dir / 'best.pt'} (epoch {epoch}, {BEST_KEYS[run.cfg.train.best_metric]} {value:.4g})")
    if not kept:
        return "no checkpoint was written before (nothing kept; --save-every-steps N keeps earlier states)"
    return "kept: " + " and ".join(kept) + "; nothing after that was saved"


def progress_line(run: Run, rec: dict) -> str:
    """The line printed every --log-every steps when there is no live bar (nohup, Slurm, a log file)."""
    total = run.epochs * run.updates_per_epoch
    if run.cfg.train.max_steps is not None:
        total = min(total, run.cfg.train.max_steps)
    t0, step0 = run.loop_start
    pace = (time.time() - t0) / max(rec["step"] - step0, 1)
    return (f"step {rec['step']}/{total} | epoch {rec['epoch']}/{run.epochs} | loss {rec['loss']:.4f} | "
            f"lr {rec['lr']:.2e} | {rec['img_per_s']:.0f} img/s | ETA {duration(pace * max(total - rec['step'], 0))}")


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def finish_summary(run: Run, stopped_by: str, report: Optional[Path]) -> dict:
    """The result of train() and the closing lines: best metric and epoch, wall time, paths, next command."""
    s, wall = run.state, time.time() - run.t_start
    key, weights = BEST_KEYS[run.cfg.train.best_metric], selection_weights(run)
    best = run.topk.history[0] if run.topk.history else None
    best_path = run.run_dir / "best.pt" if best else None
    lines = [f"done: {s.epoch} epoch(s), {s.step} steps ({stopped_by}) in {duration(wall)}; run folder {run.run_dir}"]
    if best:
        lines.append(f"best: {key} {best[0]:.4g} at epoch {best[1]} ({weights} weights) -> {best_path}")
    else:
        lines.append(f"best: none (no {key} was measured)")
    if report is not None:
        lines.append(f"report: {report}")
    ckpt = best_path or run.run_dir / "last.pt"
    lines.append(f"next: fvt eval --checkpoint {ckpt} --data {run.cfg.data.val_data or run.cfg.data.data}")
    return {"run_dir": str(run.run_dir), "stopped_by": stopped_by, "step": s.step, "epoch": s.epoch,
            "best": best[0] if best else None, "best_epoch": best[1] if best else None, "best_metric": key,
            "selected_weights": weights, "best_path": str(best_path) if best_path else None,
            "report": str(report) if report else None, "wall_time_s": wall, "metrics": s.last_metrics,
            "lines": lines}
