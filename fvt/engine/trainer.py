"""`fvt train`: set up data, model, optimizer, and run the epochs (single process or torchrun).

The run reads as four phases, each a function below:
  0. start    (`fvt.engine.start.plan_start`, `RunFolder.open`): every check that needs no data, then the
     run folder's lock; nothing is written before, and a failed set-up removes what it wrote;
  1. set-up   (`_setup_data`, `_setup_model`, `_setup_optimization`): data (rank 0 writes split.json /
     bad_files.txt) -> model (pretrained, freeze, SyncBN, EMA) -> optimizer / schedule / loss;
  2. resume   (`_resume`): weights, optimizer, schedule, RNG, sampler position and loss sums;
  3. epochs   (`_epoch_loop` -> `_train_epoch`, `_evaluate`, `_end_epoch`): train, evaluate (model and EMA),
     step the schedule, log the row, then save the top-k best and last.pt; early stopping, divergence
     (exit 3) and Ctrl-C (exit 130) end the run cleanly;
  4. finish   (`_finish`): stop event, report.html, the closing summary.
Everything the phases share lives on one `fvt.engine.runstate.Run`, with the checkpoint and resume code.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional

import torch

from ..config import Config
from ..errors import TrainingDiverged
from . import distributed as D
from .checkpoint import TopK
from .evaluate import classification_metrics, run_inference
from .optim import build_optimizer, build_scheduler, current_lr, effective_lr
from .precision import resolve_amp
from .rng import seed_everything
from .rundir import RunFolder
from .runlog import RunLogger, format_epoch_line
from .runstate import (BEST_KEYS, Run, checkpoint_dict, finish_summary, progress_line, resume_run, save_last,
                       selection_weights, weights_finite, what_was_kept)
from .start import plan_start
from .steps import StepParts, progress_bar_wanted, train_one_epoch
from .transfer import apply_freeze, count_params, format_params, frozen_batchnorms, initial_freeze, set_epoch_freeze
from . import trust


def train(cfg: Config, callbacks: Optional[list] = None) -> dict:
    """Train as ``cfg`` says; returns a summary (run_dir, stopped_by, step, epoch, best, best_epoch,
    metrics, selected_weights, best_path, report, wall_time_s).

    ``callbacks``: objects with optional methods ``on_step(record: dict)`` (after every optimizer step:
    step, epoch, loss, lr, img_per_s) and ``on_epoch_end(row: dict)`` (the metrics.csv row). They are
    called in the main process only; an exception in a callback stops the run like any other error."""
    from ..validation import validate_config

    validate_config(cfg)  # every value in its range, a window-able size: before any work
    created = not D.is_initialized()  # tear down only a process group this call set up
    dist = D.init_distributed(cfg.train.device, cfg.train.dist_timeout)
    try:
        with D.peer_failures(cfg.train.dist_timeout):  # a lost or stuck peer: one clear line, not a hang
            return _train(cfg, dist, list(callbacks or []))
    finally:
        if created:
            D.cleanup()


def _train(cfg: Config, dist: D.DistInfo, callbacks: list) -> dict:
    plan = plan_start(cfg)  # every check that needs no data; nothing written yet
    if dist.distributed:  # every rank checked the folder before rank 0 writes to it; rank 0's choice holds
        plan.run_dir = Path(D.broadcast_object(str(plan.run_dir) if dist.is_main else None))
        cfg.train.output = str(plan.run_dir)
    run = Run(cfg, dist, plan.run_dir, plan, callbacks)
    folder = RunFolder(plan.run_dir) if dist.is_main else None
    if folder is not None:
        folder.open(fresh=cfg.train.exist_ok and not plan.continuing, log=run.log)
    try:
        try:
            _setup_data(run)
            _setup_model(run)
            _setup_optimization(run)
            resume_run(run)
            _wrap_model(run)
            _open_logs(run)
        except BaseException:
            if folder is not None:
                folder.rollback()  # a failed start leaves nothing behind
            raise
        try:
            stopped_by = _epoch_loop(run)
        except KeyboardInterrupt:
            return _interrupted(run)
        except TrainingDiverged as e:  # D17: say exactly what was kept
            run.logger.event("stop", reason="diverged", step=run.state.step, message=str(e))
            run.logger.close()
            raise TrainingDiverged(f"{e}; {what_was_kept(run)}") from None
        return _finish(run, stopped_by)
    finally:
        if folder is not None:
            folder.close()


# -- 1. set-up -------------------------------------------------------------------------------------------
def _setup_data(run: Run) -> None:
    """Seeds, precision, the scanned data (rank 0 writes split.json / bad_files.txt)."""
    from ..data import build_data

    cfg, dist = run.cfg, run.dist
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    # Denormal floats (tiny Adam moments, decayed weights) make x86 CPU math many times slower as a
    # run goes on; flushing them to zero keeps late epochs as fast as early ones.
    torch.set_flush_denormal(True)
    seed_everything(cfg.train.seed + dist.rank)
    run.amp_dtype = resolve_amp(cfg.train.amp, dist.device, cfg.train.deterministic)
    if dist.distributed and cfg.train.amp == "auto":  # a timed choice: every rank takes rank 0's
        run.amp_dtype = D.broadcast_object(run.amp_dtype if dist.is_main else None)
    D.barrier()  # rank 0 holds the run folder
    run.data = build_data(cfg, run.run_dir, dist.rank, dist.world_size)
    for line in run.data.summary_lines():
        run.log(line)
    trust.after_data(run)  # the class-imbalance warning


def _build_model(cfg: Config, num_classes: int, input_size):
    from ..errors import UsageError
    from ..models import create_model

    name = cfg.model.model  # a known name: checked by start.check_names before the data scan
    kw = {"num_classes": num_classes, "img_size": list(input_size)}
    if cfg.model.drop_path_rate is not None:
        kw["drop_path_rate"] = cfg.model.drop_path_rate
    if cfg.model.drop_rate:
        kw["drop_rate"] = cfg.model.drop_rate
    try:
        return create_model(name, **kw)
    except ValueError as e:
        raise UsageError(f"--model {name} at --img-size {list(input_size)}: {str(e).splitlines()[0]}") from None


def _setup_model(run: Run) -> None:
    """The model: pretrained weights, freezing, SyncBN, device, memory format, EMA."""
    cfg, dist, log = run.cfg, run.dist, run.log
    preproc = run.data.preprocessing
    model = _build_model(cfg, len(run.data.classes), preproc.input_size)
    if cfg.model.pretrained and run.resume is None:
        from ..models import load_pretrained

        run.load_report = load_pretrained(model, cfg.model.pretrained, use_ema=not cfg.model.pretrained_raw)
        log(f"pretrained: {run.load_report.summary()}")
    frozen = apply_freeze(model, initial_freeze(cfg.model))
    run.frozen_count = len(frozen)
    run.trainable, total = count_params(model)
    if frozen:
        log(f"frozen: {len(frozen)} tensors ({cfg.model.freeze}), e.g. {', '.join(frozen[:3])}")
    log(f"model: {cfg.model.model} at {preproc.input_size[0]}x{preproc.input_size[1]}, "
        f"{format_params(run.trainable, total)}")
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
    run.updates_per_epoch = math.ceil(len(run.train_loader) / accum)
    run.scheduler, run.epochs = build_scheduler(run.optimizer, cfg, run.updates_per_epoch)
    s = cfg.sched
    if run.scheduler is not None and 0 < s.warmup_epochs and s.warmup_epochs >= s.epochs:  # F8
        run.log(f"warning: --warmup-epochs {s.warmup_epochs:g} >= --epochs {s.epochs}: the lr only warms up and "
                f"never reaches its peak {run.lr:.3g}; use --warmup-epochs {max(0, s.epochs // 10)} or more --epochs")
    run.scaler = torch.amp.GradScaler("cuda") if run.amp_dtype == torch.float16 else None
    run.criterion, run.mixup = trust.weigh_classes(run, *_build_criterion(cfg, len(data.classes)))
    if cfg.distill.teacher:
        from .distill import build_teacher

        run.teacher = build_teacher(cfg, len(data.classes), dist.device, run.log,
                                    img_size=data.preprocessing.input_size)


def _build_criterion(cfg: Config, num_classes: int):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from ..data.loaders import build_mixup

    mixup = build_mixup(cfg.aug, num_classes)
    if mixup is not None:
        return SoftTargetCrossEntropy(), mixup
    if cfg.aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.aug.smoothing), mixup
    return torch.nn.CrossEntropyLoss(), mixup


# -- 2. resume: runstate.resume_run -----------------------------------------------------------------
def _wrap_model(run: Run) -> None:
    """compile / DDP wrappers (after resume: state dicts load into the plain model), step parts, top-k."""
    cfg, dist = run.cfg, run.dist
    if cfg.model.compile:
        run.model = torch.compile(run.model)
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=ids, find_unused_parameters=cfg.model.freeze_epochs > 0)  # frozen head-only epochs
    preproc = run.data.preprocessing
    mean = torch.tensor(preproc.mean, device=dist.device).view(1, -1, 1, 1)
    std = torch.tensor(preproc.std, device=dist.device).view(1, -1, 1, 1)
    run.parts = StepParts(run.model, run.core, run.optimizer, run.scheduler, run.scaler, run.ema, run.criterion,
                          run.mixup, run.teacher, run.keep_eval_bn, dist.device, run.amp_dtype, cfg, mean, std)
    run.topk = TopK(run.run_dir, cfg.train.keep_top_k, cfg.train.best_metric != "loss", run.state.best_history)


def _open_logs(run: Run) -> None:
    """The set-up worked: config.yaml, log.jsonl, TensorBoard (rank 0)."""
    run.logger = RunLogger(run.run_dir, enabled=run.dist.is_main, trackers=run.cfg.train.log_to,
                           params=run.cfg.flat())
    if run.dist.is_main:
        run.cfg.save(run.run_dir / "config.yaml")
    D.barrier()


# -- 3. epochs -------------------------------------------------------------------------------------------
def _epoch_loop(run: Run) -> str:
    """Train epoch after epoch; returns why the loop stopped (epochs, max_steps, early_stop)."""
    cfg, s = run.cfg, run.state
    run.logger.event("start", world_size=run.dist.world_size, global_batch=run.global_batch, lr=run.lr,
                     epochs=run.epochs, resumed_from=str(run.resume) if run.resume else None,
                     trainable_params=run.trainable, selected_weights=selection_weights(run),
                     device=str(run.dist.device),
                     precision=str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "float32")
    if run.load_report is not None:  # what --pretrained loaded, re-initialised and skipped, in log.jsonl too
        run.logger.event("pretrained", **run.load_report.to_dict(), frozen=run.frozen_count)
    run.loop_start = (time.time(), s.step)
    while s.epoch < run.epochs:
        if cfg.train.max_steps is not None and s.step >= cfg.train.max_steps:
            return "max_steps"
        row, stats, mid_epoch = _train_epoch(run)
        if mid_epoch:
            _check_diverged(run, row)
            s.last_metrics = {k: v for k, v in row.items() if k.startswith(("val", "ema"))}
            run.logger.epoch(row)  # D11: the row first, then the checkpoint that says it is done
            save_last(run, False)
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
    note = set_epoch_freeze(run.core, cfg.model, s.epoch, run.keep_eval_bn)  # --freeze-epochs: head first
    if note:
        run.log(note)
        run.logger.event("freeze", epoch=s.epoch, trainable=count_params(run.core)[0])
    sampler.set_epoch(s.epoch)
    sampler.set_start(s.position)
    bar = run.dist.is_main and progress_bar_wanted()

    def on_step() -> None:
        n = cfg.train.save_every_steps
        if n and s.step % n == 0:
            save_last(run, False)

    def log_step(rec: dict) -> None:
        run.logger.event("step", **rec)
        run.logger.scalars(rec["step"], "train", {k: v for k, v in rec.items() if k != "step"})
        if not bar:  # no live bar (nohup, Slurm, a log file): one line every --log-every steps
            run.log(progress_line(run, rec))

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


def _check_diverged(run: Run, row: dict) -> None:
    """D17: a non-finite train/val loss or weights end the run before anything is marked best or saved."""
    bad = [k for k in ("train_loss", "val_loss", "ema_val_loss") if k in row and not math.isfinite(row[k])]
    bad += weights_finite(run)
    if bad:
        run.logger.epoch(row)  # the row shows what happened; the checkpoints keep the last good state
        raise TrainingDiverged(f"non-finite {', '.join(bad)} at step {run.state.step} (epoch {row['epoch']}); "
                               "try a lower --lr, --clip-grad 1.0 or --amp none")


def _end_epoch(run: Run, row: dict, stats: dict) -> bool:
    """Schedule, logs, best checkpoints, last.pt; returns True when early stopping ends the run."""
    cfg, s = run.cfg, run.state
    _check_diverged(run, row)
    s.epoch += 1
    s.position = 0
    s.loss_sum, s.loss_count = 0.0, 0
    row["epoch_time_s"] = stats["samples"] / max(stats["img_per_s"], 1e-9)
    key = BEST_KEYS[cfg.train.best_metric]
    if run.scheduler is not None:
        metric = row.get(key, row.get("val_top1"))
        if metric is not None or cfg.sched.sched != "plateau":  # plateau needs a metric
            run.scheduler.step(s.epoch, metric)
    s.last_metrics = {k: v for k, v in row.items() if k.startswith(("val", "ema"))}
    run.logger.epoch(row)  # D11: the row is on disk before the checkpoint that says the epoch is done
    improved = None
    if key in row and run.dist.is_main:
        improved = run.topk.add(row[key], s.epoch, checkpoint_dict(run, True))
    improved = D.broadcast_object(improved)
    if key in row:
        s.bad_evals = 0 if improved == 0 else s.bad_evals + 1
    save_last(run, True)
    run.log(format_epoch_line(row, run.epochs) + (" | best" if improved == 0 else ""))
    run.notify("on_epoch_end", row)
    if cfg.train.early_stop and s.bad_evals >= cfg.train.early_stop:
        run.log(f"early stop: {s.bad_evals} evaluations without a better {key}")
        return True
    return False


# -- 4. finish -------------------------------------------------------------------------------------------
def _interrupted(run: Run) -> dict:
    save_last(run, False, gather=False)  # ranks may be interrupted at different points: no collective
    run.log(f"interrupted: saved {run.run_dir / 'last.pt'} at step {run.state.step}; continue with "
            f"fvt train --output {run.run_dir} --resume auto")
    run.logger.event("stop", reason="interrupted", step=run.state.step)
    run.logger.close()
    return {"run_dir": str(run.run_dir), "stopped_by": "interrupted", "step": run.state.step}


def _finish(run: Run, stopped_by: str) -> dict:
    s = run.state
    trust.calibrate_best(run)  # temperature + abstention threshold into best.pt, fitted on the val split
    run.logger.event("stop", reason=stopped_by, step=s.step, best=run.topk.best())
    D.barrier()
    report = None
    if run.dist.is_main:
        report = _write_report(run.run_dir, run.log)
    run.logger.close()  # after the report: trackers upload it as an artifact
    summary = finish_summary(run, stopped_by, report)
    for line in summary.pop("lines"):
        run.log(line)
    return summary


def _write_report(run_dir: Path, log) -> Optional[Path]:
    try:
        from ..evaluation.report import write_report
    except ImportError:
        return None
    try:
        write_report(run_dir)
        return run_dir / "report.html"
    except Exception as e:  # a report problem must not fail a finished training
        log(f"warning: report.html not written ({str(e).splitlines()[0]})")
        return None
