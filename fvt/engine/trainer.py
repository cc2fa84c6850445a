"""`fvt train`: set up data, model, optimizer, and run the epochs (single process or torchrun).

Order of work: process group -> data (rank 0 writes split.json / bad_files.txt) -> model
(pretrained, freeze, SyncBN, EMA, compile, DDP) -> optimizer / schedule -> resume -> epochs.
Each epoch: train, evaluate (model and EMA), step the schedule, log, save last.pt and the
top-k best; early stopping, non-finite loss and Ctrl-C end the run cleanly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

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


def train(cfg: Config) -> dict:
    """Train as ``cfg`` says; returns a summary (best metric, last metrics, steps, run_dir, stopped_by)."""
    from ..validation import validate_config

    validate_config(cfg)  # every value in its range, a window-able size: before any work
    created = not D.is_initialized()  # tear down only a process group this call set up
    dist = D.init_distributed(cfg.train.device)
    try:
        return _train(cfg, dist)
    finally:
        if created:
            D.cleanup()


def _train(cfg: Config, dist: D.DistInfo) -> dict:
    from ..data import build_data
    from ..data.loaders import build_eval_loader, build_mixup, build_train_loader

    run_dir = Path(cfg.train.output)
    logger = RunLogger(run_dir, enabled=dist.is_main, tensorboard=True)
    log = logger.print
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
    _set_determinism(cfg)
    # Denormal floats (tiny Adam moments, decayed weights) make x86 CPU math many times slower as a
    # run goes on; flushing them to zero keeps late epochs as fast as early ones.
    torch.set_flush_denormal(True)
    seed_everything(cfg.train.seed + dist.rank)
    amp_dtype = resolve_amp(cfg.train.amp, dist.device, cfg.train.deterministic)
    if dist.distributed and cfg.train.amp == "auto":  # a timed choice: every rank takes rank 0's
        amp_dtype = D.broadcast_object(amp_dtype if dist.is_main else None)
    resume = _resume_path(cfg, run_dir)

    data = build_data(cfg, run_dir, dist.rank, dist.world_size)
    for line in data.summary_lines():
        log(line)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    D.barrier()
    classes, preproc = data.classes, data.preprocessing

    model = _build_model(cfg, len(classes), preproc.input_size, log)
    if cfg.model.pretrained and resume is None:
        from ..models import load_pretrained

        report = load_pretrained(model, cfg.model.pretrained, use_ema=not cfg.model.pretrained_raw)
        log(f"pretrained: {report.summary() if hasattr(report, 'summary') else report}")
    frozen = apply_freeze(model, cfg.model.freeze)
    trainable, total = count_params(model)
    if frozen:
        log(f"frozen: {len(frozen)} tensors ({cfg.model.freeze}), e.g. {', '.join(frozen[:3])}")
    log(f"model: {cfg.model.model} at {preproc.input_size[0]}x{preproc.input_size[1]}, "
        f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters train")
    if cfg.model.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    if dist.distributed and cfg.model.sync_bn:
        if dist.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm runs on GPUs only
            log("warning: --sync-bn needs CUDA devices; BatchNorm stays per-process on CPU")
    keep_eval_bn = frozen_batchnorms(model, cfg.model.bn_eval)
    model.to(dist.device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    core = model

    train_loader = build_train_loader(data, cfg, dist.rank, dist.world_size)
    sampler = train_loader.train_sampler
    eval_bs = cfg.data.eval_batch_size or 2 * cfg.data.batch_size
    val_loader = build_eval_loader(data.val, eval_bs, cfg.data.workers, dist.rank, dist.world_size) if data.val else None
    accum = max(1, cfg.optim.accum_steps)
    global_batch = cfg.data.batch_size * dist.world_size * accum
    lr = effective_lr(cfg, global_batch)
    log(f"batch: {cfg.data.batch_size} per process x {dist.world_size} process(es) x {accum} accumulation = "
        f"global batch {global_batch}; lr {lr:.3g}; device {dist.device}; amp {str(amp_dtype).replace('torch.', '') if amp_dtype else 'none (float32)'}{' (auto)' if cfg.train.amp == 'auto' else ''}")
    optimizer = build_optimizer(core, cfg, lr)
    updates_per_epoch = math.ceil(len(train_loader) / accum)
    scheduler, epochs = build_scheduler(optimizer, cfg, updates_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = None
    if cfg.train.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(core, decay=cfg.train.ema_decay)

    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    mixup = build_mixup(cfg.aug, len(classes))
    if mixup is not None:
        criterion = SoftTargetCrossEntropy()
    elif cfg.aug.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.aug.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    teacher = None
    if cfg.distill.teacher:
        from .distill import build_teacher

        teacher = build_teacher(cfg, len(classes), dist.device, log)

    state = TrainState()
    if resume is not None:
        ckpt = load_checkpoint(resume)
        check_resumable(ckpt, resume, cfg.model.model, classes)
        try:
            core.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            from ..errors import CheckpointError

            raise CheckpointError(f"{resume} does not fit {cfg.model.model} as configured "
                                  f"(img size / classes?): {str(e).splitlines()[0]}") from None
        if ema is not None and ckpt.get("state_dict_ema") is not None:
            ema.module.load_state_dict(ckpt["state_dict_ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        load_scheduler_state(scheduler, ckpt.get("scheduler"))
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        smp = ckpt.get("sampler") or {}
        state = TrainState(epoch=int(smp.get("epoch", ckpt["epoch"])), step=int(ckpt["step"]),
                           position=int(smp.get("start", 0)), best_history=list(ckpt.get("best_history") or []),
                           bad_evals=int(ckpt.get("bad_evals", 0)), last_metrics=dict(ckpt.get("metrics") or {}))
        per_rank = ckpt.get("rng_per_rank")
        if per_rank is not None and len(per_rank) == dist.world_size:
            set_rng_state(per_rank[dist.rank])
        elif ckpt.get("rng") is not None and dist.world_size == 1:
            set_rng_state(ckpt["rng"])
        log(f"resumed from {resume}: epoch {state.epoch} done, step {state.step}, {state.position} samples into the next")
        del ckpt
    elif cfg.train.resume == "auto":
        log(f"--resume auto: no last.pt in {run_dir}, starting a new run")

    if cfg.model.compile:
        model = torch.compile(model)
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    mean = torch.tensor(preproc.mean, device=dist.device).view(1, -1, 1, 1)
    std = torch.tensor(preproc.std, device=dist.device).view(1, -1, 1, 1)
    parts = StepParts(model, core, optimizer, scheduler, scaler, ema, criterion, mixup, teacher, keep_eval_bn,
                      dist.device, amp_dtype, cfg, mean, std)
    topk = TopK(run_dir, cfg.train.keep_top_k, cfg.train.best_metric != "loss", state.best_history)

    def checkpoint(epoch_complete: bool) -> dict:
        return {
            "fvt_version": __version__, "model_name": cfg.model.model,
            "model_kwargs": dict(getattr(core, "model_kwargs", {}) or {}),
            "state_dict": core.state_dict(), "state_dict_ema": ema.module.state_dict() if ema is not None else None,
            "classes": list(classes), "preprocessing": preproc.to_dict(), "config": cfg.to_dict(),
            "epoch": state.epoch, "step": state.step, "metrics": dict(state.last_metrics),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler_state(scheduler),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": get_rng_state(),
            "sampler": {"epoch": state.epoch, "start": 0 if epoch_complete else state.position},
            "best_history": [list(h) for h in topk.history], "bad_evals": state.bad_evals,
            "epoch_complete": epoch_complete,
        }

    def save_last(epoch_complete: bool, gather: bool = True) -> None:
        # every rank's RNG travels in the checkpoint, so a DDP resume restores each rank's streams
        per_rank = D.all_gather_objects(get_rng_state()) if gather and dist.distributed else None
        if dist.is_main:
            ck = checkpoint(epoch_complete)
            if per_rank is not None:
                ck["rng_per_rank"] = per_rank
            atomic_save(ck, run_dir / "last.pt")

    def on_step() -> None:
        n = cfg.train.save_every_steps
        if n and state.step % n == 0:
            save_last(False)

    def log_step(rec: dict) -> None:
        logger.event("step", **rec)
        logger.scalars(rec["step"], "train", {k: v for k, v in rec.items() if k != "step"})

    logger.event("start", world_size=dist.world_size, global_batch=global_batch, lr=lr, epochs=epochs,
                 resumed_from=str(resume) if resume else None, trainable_params=trainable)
    stopped_by = "epochs"
    try:
        while state.epoch < epochs:
            if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
                stopped_by = "max_steps"
                break
            sampler.set_epoch(state.epoch)
            sampler.set_start(state.position)
            stats = train_one_epoch(parts, train_loader, state, on_step, log_step, dist.is_main)
            mid_epoch = cfg.train.max_steps is not None and state.step >= cfg.train.max_steps and \
                state.position < sampler.epoch_length()
            row = {"epoch": state.epoch + 1, "step": state.step, "lr": current_lr(optimizer),
                   "train_loss": stats["train_loss"], "img_per_s": stats["img_per_s"]}
            evaluate_now = val_loader is not None and ((state.epoch + 1) % max(1, cfg.train.eval_every) == 0
                                                       or state.epoch + 1 == epochs or mid_epoch)
            if evaluate_now:
                for prefix, net in (("", model if not dist.distributed else core), ("ema_", ema.module if ema else None)):
                    if net is None:
                        continue
                    lg, tg, _ = run_inference(net, val_loader, dist.device, amp_dtype, cfg.model.channels_last)
                    row.update({f"{prefix}val_{k}": v for k, v in classification_metrics(lg, tg).items() if k != "count"})
            if mid_epoch:
                state.last_metrics = {k: v for k, v in row.items() if k.startswith(("val", "ema"))}
                save_last(False)
                stopped_by = "max_steps"
                logger.epoch(row)
                log(format_epoch_line(row, epochs) + f" | stopped at --max-steps {cfg.train.max_steps}")
                break
            state.epoch += 1
            state.position = 0
            row["epoch_time_s"] = stats["samples"] / max(stats["img_per_s"], 1e-9)
            if scheduler is not None:
                metric = row.get(BEST_KEYS[cfg.train.best_metric], row.get("val_top1"))
                if metric is not None or cfg.sched.sched != "plateau":  # plateau needs a metric
                    scheduler.step(state.epoch, metric)
            state.last_metrics = {k: v for k, v in row.items() if k.startswith(("val", "ema"))}
            improved = None
            key = BEST_KEYS[cfg.train.best_metric]
            if key in row and dist.is_main:
                improved = topk.add(row[key], state.epoch, checkpoint(True))
            improved = D.broadcast_object(improved)
            if key in row:
                state.bad_evals = 0 if improved == 0 else state.bad_evals + 1
            save_last(True)
            logger.epoch(row)
            log(format_epoch_line(row, epochs) + (" | best" if improved == 0 else ""))
            if cfg.train.early_stop and state.bad_evals >= cfg.train.early_stop:
                log(f"early stop: {state.bad_evals} evaluations without a better {key}")
                stopped_by = "early_stop"
                break
    except KeyboardInterrupt:
        save_last(False, gather=False)  # ranks may be interrupted at different points: no collective
        log(f"interrupted: saved {run_dir / 'last.pt'} at step {state.step}; continue with --resume auto")
        logger.event("stop", reason="interrupted", step=state.step)
        logger.close()
        return {"run_dir": str(run_dir), "stopped_by": "interrupted", "step": state.step}
    logger.event("stop", reason=stopped_by, step=state.step, best=topk.best())
    logger.close()
    D.barrier()
    if dist.is_main:
        _write_report(run_dir, log)
    return {"run_dir": str(run_dir), "stopped_by": stopped_by, "step": state.step, "epoch": state.epoch,
            "best": topk.best(), "metrics": state.last_metrics}


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
