"""`fvt train`: set up data, model, optimizer, and run the epochs (single process or torchrun).

The run reads as four phases, each a function below:
  1. set-up   (`_setup_data`, `_setup_model`, `_setup_optimization`): process group -> data (rank 0 writes
     split.json / bad_files.txt) -> model (pretrained, freeze, SyncBN, EMA) -> optimizer / schedule / loss;
  2. resume   (`_resume`): weights, optimizer, schedule, RNG and sampler position from a checkpoint;
  3. epochs   (`_epoch_loop` -> `_train_epoch`, `_evaluate`, `_end_epoch`): train, evaluate (model and EMA),
     step the schedule, log, save last.pt and the top-k best; early stopping, non-finite loss and Ctrl-C
     end the run cleanly;
  4. finish   (`_finish`): stop event, report.html, the summary dict.
Everything the phases share lives on one :class:`Run`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch

from .. import __version__
from ..config import Config
from ..errors import UsageError
from . import distributed as D
from .checkpoint import TopK, atomic_save, check_resumable, load_checkpoint
from .evaluate import classification_metrics, run_inference
from .optim import (build_optimizer, build_scheduler, current_lr, effective_lr, load_scheduler_state,
                    scheduler_state)
from .precision import resolve_amp
from .rng import get_rng_state, seed_everything, set_rng_state
from .runlog import RunLogger, format_epoch_line
from .steps import StepParts, TrainState, train_one_epoch
from .transfer import apply_freeze, count_params, frozen_batchnorms

BEST_KEYS = {"top1": "val_top1", "top5": "val_top5", "loss": "val_loss", "ema_top1": "ema_val_top1"}


@dataclass
class Run:
    """What the phases of one training share (built by set-up, advanced by the epoch loop)."""

    cfg: Config
    dist: D.DistInfo
    run_dir: Path
    logger: RunLogger
    callbacks: List[Any] = field(default_factory=list)
    resume: Optional[Path] = None
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
    epochs: int = 0
    lr: float = 0.0
    global_batch: int = 0
    trainable: int = 0
    keep_eval_bn: list = field(default_factory=list)   # frozen BatchNorms that stay in eval mode
    criterion: Any = None
    mixup: Any = None
    teacher: Any = None
    parts: Optional[StepParts] = None
    topk: Optional[TopK] = None
    state: TrainState = field(default_factory=TrainState)

    def log(self, msg: str) -> None:
        self.logger.print(msg)

    def notify(self, hook: str, record: dict) -> None:
        """Call ``hook`` (on_step / on_epoch_end) on every callback that has it (main process only)."""
        if not self.dist.is_main:
            return
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(dict(record))


def _set_determinism(cfg: Config) -> None:
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _resume_path(cfg: Config, run_dir: Path) -> Optional[Path]:
    r = cfg.train.resume
    if not r:
        return None
    if r == "auto":
        p = run_dir / "last.pt"
        return p if p.is_file() else None
    p = Path(r)
    if not p.is_file():
        raise UsageError(f"--resume {r}: no such checkpoint (use --resume auto to continue {run_dir} if it has last.pt)")
    return p


def _build_model(cfg: Config, num_classes: int, input_size, log):
    from ..models import create_model, list_models

    name = cfg.model.model
    names = list_models()
    if names and name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        raise UsageError(f"unknown model --model {name!r}" + (f"; did you mean '{close[0]}'?" if close else "; see `fvt models`"))
    kw = {"num_classes": num_classes, "img_size": list(input_size)}
    if cfg.model.drop_path_rate is not None:
        kw["drop_path_rate"] = cfg.model.drop_path_rate
    if cfg.model.drop_rate:
        kw["drop_rate"] = cfg.model.drop_rate
    try:
        return create_model(name, **kw)
    except ValueError as e:
        raise UsageError(f"--model {name} at --img-size {list(input_size)}: {str(e).splitlines()[0]}") from None


def train(cfg: Config, callbacks: Optional[list] = None) -> dict:
    """Train as ``cfg`` says; returns a summary (best metric, last metrics, steps, run_dir, stopped_by).

    ``callbacks``: objects with optional methods ``on_step(record: dict)`` (after every optimizer step:
    step, epoch, loss, lr, img_per_s) and ``on_epoch_end(row: dict)`` (the metrics.csv row). They are
    called in the main process only; an exception in a callback stops the run like any other error."""
    created = not D.is_initialized()  # tear down only a process group this call set up
    dist = D.init_distributed(cfg.train.device)
    try:
        return _train(cfg, dist, list(callbacks or []))
    finally:
        if created:
            D.cleanup()


def _train(cfg: Config, dist: D.DistInfo, callbacks: list) -> dict:
    run_dir = Path(cfg.train.output)
    run = Run(cfg, dist, run_dir, RunLogger(run_dir, enabled=dist.is_main, tensorboard=True), callbacks)
    _check_start(cfg)
    _setup_data(run)
    _setup_model(run)
    _setup_optimization(run)
    _resume(run)
    _wrap_model(run)
    try:
        stopped_by = _epoch_loop(run)
    except KeyboardInterrupt:
        return _interrupted(run)
    return _finish(run, stopped_by)


# -- 1. set-up -------------------------------------------------------------------------------------------
def _check_start(cfg: Config) -> None:
    """Refuse what cannot work before any data is read."""
    if not cfg.data.data:
        raise UsageError("no data given: pass --data DIR (class folders, or train/ and val/) or set data: in --config")
    if cfg.data.batch_size < 2:
        raise UsageError(f"--batch-size {cfg.data.batch_size} is per process; BatchNorm cannot train on a single "
                         "sample: use --batch-size 2 or more")
    if cfg.optim.sam_rho < 0 or (cfg.optim.sam_rho > 0 and cfg.optim.accum_steps > 1):
        raise UsageError(f"--sam-rho {cfg.optim.sam_rho}: SAM needs a radius >= 0 and --accum-steps 1 (its second "
                         "pass recomputes one batch); raise --batch-size instead of accumulating")
    if cfg.optim.accum_steps < 1 or cfg.sched.epochs < 1:
        raise UsageError("--accum-steps and --epochs must be >= 1")


def _setup_data(run: Run) -> None:
    """Seeds, precision, the resume checkpoint's path, the scanned data; rank 0 saves config.yaml."""
    from ..data import build_data

    cfg, dist = run.cfg, run.dist
    _set_determinism(cfg)
    # Denormal floats (tiny Adam moments, decayed weights) make x86 CPU math many times slower as a
    # run goes on; flushing them to zero keeps late epochs as fast as early ones.
    torch.set_flush_denormal(True)
    seed_everything(cfg.train.seed + dist.rank)
    run.amp_dtype = resolve_amp(cfg.train.amp, dist.device, cfg.train.deterministic)
    if dist.distributed and cfg.train.amp == "auto":  # a timed choice: every rank takes rank 0's
        run.amp_dtype = D.broadcast_object(run.amp_dtype if dist.is_main else None)
    run.resume = _resume_path(cfg, run.run_dir)
    run.data = build_data(cfg, run.run_dir, dist.rank, dist.world_size)
    for line in run.data.summary_lines():
        run.log(line)
    if dist.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run.run_dir / "config.yaml")
    D.barrier()


def _setup_model(run: Run) -> None:
    """The model: pretrained weights, freezing, SyncBN, device, memory format, EMA."""
    cfg, dist, log = run.cfg, run.dist, run.log
    preproc = run.data.preprocessing
    model = _build_model(cfg, len(run.data.classes), preproc.input_size, log)
    if cfg.model.pretrained and run.resume is None:
        from ..models import load_pretrained

        report = load_pretrained(model, cfg.model.pretrained, use_ema=not cfg.model.pretrained_raw)
        log(f"pretrained: {report.summary() if hasattr(report, 'summary') else report}")
    frozen = apply_freeze(model, cfg.model.freeze)
    run.trainable, total = count_params(model)
    if frozen:
        log(f"frozen: {len(frozen)} tensors ({cfg.model.freeze}), e.g. {', '.join(frozen[:3])}")
    log(f"model: {cfg.model.model} at {preproc.input_size[0]}x{preproc.input_size[1]}, "
        f"{run.trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters train")
    if cfg.model.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    if dist.distributed and cfg.model.sync_bn:
        if dist.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm runs on GPUs only
            log("warning: --sync-bn needs CUDA devices; BatchNorm stays per-process on CPU")
    run.keep_eval_bn = frozen_batchnorms(model, cfg.model.bn_eval)
    model.to(dist.device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    run.model = run.core = model
    if cfg.train.ema:
        from timm.utils import ModelEmaV3

        run.ema = ModelEmaV3(model, decay=cfg.train.ema_decay)


def _setup_optimization(run: Run) -> None:
    """Loaders, optimizer, schedule, loss scaler, loss function and teacher."""
    from ..data.loaders import build_eval_loader, build_train_loader

    cfg, dist, data = run.cfg, run.dist, run.data
    run.train_loader = build_train_loader(data, cfg, dist.rank, dist.world_size)
    eval_bs = cfg.data.eval_batch_size or 2 * cfg.data.batch_size
    if data.val:
        run.val_loader = build_eval_loader(data.val, eval_bs, cfg.data.workers, dist.rank, dist.world_size)
    accum = max(1, cfg.optim.accum_steps)
    run.global_batch = cfg.data.batch_size * dist.world_size * accum
    run.lr = effective_lr(cfg, run.global_batch)
    amp = str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "none (float32)"
    run.log(f"batch: {cfg.data.batch_size} per process x {dist.world_size} process(es) x {accum} accumulation = "
            f"global batch {run.global_batch}; lr {run.lr:.3g}; device {dist.device}; amp {amp}"
            f"{' (auto)' if cfg.train.amp == 'auto' else ''}")
    run.optimizer = build_optimizer(run.core, cfg, run.lr)
    updates_per_epoch = math.ceil(len(run.train_loader) / accum)
    run.scheduler, run.epochs = build_scheduler(run.optimizer, cfg, updates_per_epoch)
    run.scaler = torch.amp.GradScaler("cuda") if run.amp_dtype == torch.float16 else None
    run.criterion, run.mixup = _build_criterion(cfg, len(data.classes))
    run.teacher = None
    if cfg.distill.teacher:
        from .distill import build_teacher

        run.teacher = build_teacher(cfg, len(data.classes), dist.device, run.log)


def _build_criterion(cfg: Config, num_classes: int):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from ..data.loaders import build_mixup

    mixup = build_mixup(cfg.aug, num_classes)
    if mixup is not None:
        return SoftTargetCrossEntropy(), mixup
    if cfg.aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.aug.smoothing), mixup
    return torch.nn.CrossEntropyLoss(), mixup


# -- 2. resume -------------------------------------------------------------------------------------------
def _resume(run: Run) -> None:
    """Continue from run.resume: weights, EMA, optimizer, schedule, scaler, sampler position, RNG."""
    cfg, dist = run.cfg, run.dist
    if run.resume is None:
        if cfg.train.resume == "auto":
            run.log(f"--resume auto: no last.pt in {run.run_dir}, starting a new run")
        return
    ckpt = load_checkpoint(run.resume)
    check_resumable(ckpt, run.resume, cfg.model.model, run.data.classes)
    try:
        run.core.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        from ..errors import CheckpointError

        raise CheckpointError(f"{run.resume} does not fit {cfg.model.model} as configured "
                              f"(img size / classes?): {str(e).splitlines()[0]}") from None
    if run.ema is not None and ckpt.get("state_dict_ema") is not None:
        run.ema.module.load_state_dict(ckpt["state_dict_ema"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    load_scheduler_state(run.scheduler, ckpt.get("scheduler"))
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    smp = ckpt.get("sampler") or {}
    run.state = TrainState(epoch=int(smp.get("epoch", ckpt["epoch"])), step=int(ckpt["step"]),
                           position=int(smp.get("start", 0)), best_history=list(ckpt.get("best_history") or []),
                           bad_evals=int(ckpt.get("bad_evals", 0)), last_metrics=dict(ckpt.get("metrics") or {}))
    per_rank = ckpt.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == dist.world_size:
        set_rng_state(per_rank[dist.rank])
    elif ckpt.get("rng") is not None and dist.world_size == 1:
        set_rng_state(ckpt["rng"])
    s = run.state
    run.log(f"resumed from {run.resume}: epoch {s.epoch} done, step {s.step}, {s.position} samples into the next")


def _wrap_model(run: Run) -> None:
    """compile / DDP wrappers (after resume: state dicts load into the plain model), step parts, top-k."""
    cfg, dist = run.cfg, run.dist
    if cfg.model.compile:
        run.model = torch.compile(run.model)
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        run.model = torch.nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    preproc = run.data.preprocessing
    mean = torch.tensor(preproc.mean, device=dist.device).view(1, -1, 1, 1)
    std = torch.tensor(preproc.std, device=dist.device).view(1, -1, 1, 1)
    run.parts = StepParts(run.model, run.core, run.optimizer, run.scheduler, run.scaler, run.ema, run.criterion,
                          run.mixup, run.teacher, run.keep_eval_bn, dist.device, run.amp_dtype, cfg, mean, std)
    run.topk = TopK(run.run_dir, cfg.train.keep_top_k, cfg.train.best_metric != "loss", run.state.best_history)


# -- checkpoints -----------------------------------------------------------------------------------------
def _checkpoint(run: Run, epoch_complete: bool) -> dict:
    """The checkpoint dict (format: fvt.engine.checkpoint) of the run as it stands."""
    s, core, ema = run.state, run.core, run.ema
    return {
        "fvt_version": __version__, "model_name": run.cfg.model.model,
        "model_kwargs": dict(getattr(core, "model_kwargs", {}) or {}),
        "state_dict": core.state_dict(), "state_dict_ema": ema.module.state_dict() if ema is not None else None,
        "classes": list(run.data.classes), "preprocessing": run.data.preprocessing.to_dict(),
        "config": run.cfg.to_dict(), "epoch": s.epoch, "step": s.step, "metrics": dict(s.last_metrics),
        "optimizer": run.optimizer.state_dict(), "scheduler": scheduler_state(run.scheduler),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None, "rng": get_rng_state(),
        "sampler": {"epoch": s.epoch, "start": 0 if epoch_complete else s.position},
        "best_history": [list(h) for h in run.topk.history], "bad_evals": s.bad_evals,
        "epoch_complete": epoch_complete,
    }


def _save_last(run: Run, epoch_complete: bool, gather: bool = True) -> None:
    # every rank's RNG travels in the checkpoint, so a DDP resume restores each rank's streams
    per_rank = D.all_gather_objects(get_rng_state()) if gather and run.dist.distributed else None
    if run.dist.is_main:
        ck = _checkpoint(run, epoch_complete)
        if per_rank is not None:
            ck["rng_per_rank"] = per_rank
        atomic_save(ck, run.run_dir / "last.pt")


# -- 3. epochs -------------------------------------------------------------------------------------------
def _epoch_loop(run: Run) -> str:
    """Train epoch after epoch; returns why the loop stopped (epochs, max_steps, early_stop)."""
    cfg, s = run.cfg, run.state
    run.logger.event("start", world_size=run.dist.world_size, global_batch=run.global_batch, lr=run.lr,
                     epochs=run.epochs, resumed_from=str(run.resume) if run.resume else None,
                     trainable_params=run.trainable)
    while s.epoch < run.epochs:
        if cfg.train.max_steps is not None and s.step >= cfg.train.max_steps:
            return "max_steps"
        row, stats, mid_epoch = _train_epoch(run)
        if mid_epoch:
            s.last_metrics = {k: v for k, v in row.items() if k.startswith(("val", "ema"))}
            _save_last(run, False)
            run.logger.epoch(row)
            run.log(format_epoch_line(row, run.epochs) + f" | stopped at --max-steps {cfg.train.max_steps}")
            run.notify("on_epoch_end", row)
            return "max_steps"
        if _end_epoch(run, row, stats):
            return "early_stop"
    return "epochs"


def _train_epoch(run: Run):
    """One pass over the training data, then the evaluation if due; returns (row, stats, stopped mid-epoch)."""
    cfg, s = run.cfg, run.state
    sampler = run.train_loader.train_sampler
    sampler.set_epoch(s.epoch)
    sampler.set_start(s.position)

    def on_step() -> None:
        n = cfg.train.save_every_steps
        if n and s.step % n == 0:
            _save_last(run, False)

    def log_step(rec: dict) -> None:
        run.logger.event("step", **rec)
        run.logger.scalars(rec["step"], "train", {k: v for k, v in rec.items() if k != "step"})

    stats = train_one_epoch(run.parts, run.train_loader, s, on_step, log_step, run.dist.is_main,
                            each_step=lambda rec: run.notify("on_step", rec))
    mid_epoch = cfg.train.max_steps is not None and s.step >= cfg.train.max_steps and \
        s.position < sampler.epoch_length()
    row = {"epoch": s.epoch + 1, "step": s.step, "lr": current_lr(run.optimizer),
           "train_loss": stats["train_loss"], "img_per_s": stats["img_per_s"]}
    due = (s.epoch + 1) % max(1, cfg.train.eval_every) == 0 or s.epoch + 1 == run.epochs or mid_epoch
    if run.val_loader is not None and due:
        row.update(_evaluate(run))
    return row, stats, mid_epoch


def _evaluate(run: Run) -> dict:
    """Validation metrics of the model (val_*) and of its EMA (ema_val_*)."""
    dist, out = run.dist, {}
    for prefix, net in (("", run.model if not dist.distributed else run.core),
                        ("ema_", run.ema.module if run.ema else None)):
        if net is None:
            continue
        lg, tg, _ = run_inference(net, run.val_loader, dist.device, run.amp_dtype, run.cfg.model.channels_last)
        out.update({f"{prefix}val_{k}": v for k, v in classification_metrics(lg, tg).items() if k != "count"})
    return out


def _end_epoch(run: Run, row: dict, stats: dict) -> bool:
    """Schedule, best checkpoints, last.pt, logs; returns True when early stopping ends the run."""
    cfg, s = run.cfg, run.state
    s.epoch += 1
    s.position = 0
    row["epoch_time_s"] = stats["samples"] / max(stats["img_per_s"], 1e-9)
    key = BEST_KEYS[cfg.train.best_metric]
    if run.scheduler is not None:
        metric = row.get(key, row.get("val_top1"))
        if metric is not None or cfg.sched.sched != "plateau":  # plateau needs a metric
            run.scheduler.step(s.epoch, metric)
    s.last_metrics = {k: v for k, v in row.items() if k.startswith(("val", "ema"))}
    improved = None
    if key in row and run.dist.is_main:
        improved = run.topk.add(row[key], s.epoch, _checkpoint(run, True))
    improved = D.broadcast_object(improved)
    if key in row:
        s.bad_evals = 0 if improved == 0 else s.bad_evals + 1
    _save_last(run, True)
    run.logger.epoch(row)
    run.log(format_epoch_line(row, run.epochs) + (" | best" if improved == 0 else ""))
    run.notify("on_epoch_end", row)
    if cfg.train.early_stop and s.bad_evals >= cfg.train.early_stop:
        run.log(f"early stop: {s.bad_evals} evaluations without a better {key}")
        return True
    return False


# -- 4. finish -------------------------------------------------------------------------------------------
def _interrupted(run: Run) -> dict:
    _save_last(run, False, gather=False)  # ranks may be interrupted at different points: no collective
    run.log(f"interrupted: saved {run.run_dir / 'last.pt'} at step {run.state.step}; continue with --resume auto")
    run.logger.event("stop", reason="interrupted", step=run.state.step)
    run.logger.close()
    return {"run_dir": str(run.run_dir), "stopped_by": "interrupted", "step": run.state.step}


def _finish(run: Run, stopped_by: str) -> dict:
    s = run.state
    run.logger.event("stop", reason=stopped_by, step=s.step, best=run.topk.best())
    run.logger.close()
    D.barrier()
    if run.dist.is_main:
        _write_report(run.run_dir, run.log)
    return {"run_dir": str(run.run_dir), "stopped_by": stopped_by, "step": s.step, "epoch": s.epoch,
            "best": run.topk.best(), "metrics": s.last_metrics}


def _write_report(run_dir: Path, log) -> None:
    try:
        from ..evaluation.report import write_report
    except ImportError:
        return
    try:
        write_report(run_dir)
        log(f"report: {run_dir / 'report.html'}")
    except Exception as e:  # a report problem must not fail a finished training
        log(f"warning: report.html not written ({str(e).splitlines()[0]})")
