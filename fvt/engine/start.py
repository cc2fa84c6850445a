"""Everything `fvt train` checks before it reads data or writes a file (issue 13 item 1).

A start that cannot work fails here, in one line, with nothing written: the config's own checks, the
names (--model, --opt, --pretrained / --teacher files), the data path, the run folder (D1, non-empty,
lock), and a resume checkpoint (D5 schema, D4 optimizer, F1 length).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import Config
from ..errors import CheckpointError, DataError, UsageError
from .rundir import check_run_dir, resolve_run_dir
from .tasks import resolve_run_task

WEIGHT_SUFFIXES = (".pth", ".tar", ".pt", ".safetensors", ".bin", ".ckpt")


@dataclass
class StartPlan:
    run_dir: Path
    resume: Optional[Path]         # checkpoint to continue from, if any
    ckpt: Optional[dict]           # that checkpoint, loaded and validated (D5)
    planned_epochs: Optional[int]  # epochs the resumed run was planned for (F1)
    continuing: bool = False       # resuming the run that lives in run_dir (its files stay)


def check_config(cfg: Config) -> None:
    """What only training needs, beyond the config's own range checks (fvt.validation.validate_config,
    which `train` runs first)."""
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
    from .trackers import parse_log_to
    from .trust import check_options

    parse_log_to(cfg.train.log_to)  # an unknown tracker or a missing mlflow/wandb: before the data scan
    check_options(cfg)  # --class-weights / --relabel files readable before the data scan
    from .speedups import check_options as check_speed_options

    check_speed_options(cfg)  # --time, --progressive, --cache


def check_names(cfg: Config) -> None:
    """--model, --opt and the files named by --data, --val-data, --pretrained and --teacher exist."""
    from timm.optim import list_optimizers

    from ..models import list_models

    models = list_models()
    if models and cfg.model.model not in models:
        raise UsageError(f"--model {cfg.model.model!r} is not a model fvt knows"
                         f"{_hint(cfg.model.model, models) or '; see `fvt models`'}")
    optimizers = set(list_optimizers()) | {"sophia", "sophiag"}
    if cfg.optim.opt.lower() not in optimizers:
        raise UsageError(f"--opt {cfg.optim.opt!r} is not an optimizer timm or fvt knows"
                         f"{_hint(cfg.optim.opt.lower(), sorted(optimizers))}")
    from ..data.shard_source import is_shard_spec

    for flag, value in (("--data", cfg.data.data), ("--val-data", cfg.data.val_data), ("--test-data", cfg.data.test_data)):
        if value and not is_shard_spec(value) and not Path(value).exists():  # shards: patterns, URLs, pipe:
            raise DataError(f"{flag} {value}: no such file or folder")
    for flag, value in (("--pretrained", cfg.model.pretrained), ("--teacher", cfg.distill.teacher),
                        ("--teacher-weights", cfg.distill.teacher_weights)):
        if value and _names_a_file(value) and not Path(value).is_file():
            raise UsageError(f"{flag} {value}: no such file")


def _names_a_file(value: str) -> bool:
    """A local path (not a model name or a hub id that another stage resolves)."""
    if "://" in value or value.startswith("hf-hub:") or value.startswith("hf_hub:"):
        return False
    return "/" in value or value.lower().endswith(WEIGHT_SUFFIXES)


def _hint(value: str, names) -> str:
    import difflib

    close = difflib.get_close_matches(value, list(names), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def plan_start(cfg: Config) -> StartPlan:
    """All checks, no writes; sets cfg.train.output to the run folder chosen. Run on every rank."""
    from . import distributed as D  # here: check_config above is what `fvt train` runs before torch is imported
    from .checkpoint import check_resumable, load_checkpoint, validate_for_resume

    check_config(cfg)
    check_names(cfg)
    resolve_run_task(cfg)  # --task auto -> the data's task (a CSV's label sets), recorded in config.yaml
    r = cfg.train.resume
    if not r and D.launched_by_torchrun():  # a torchelastic restart of this job continues its last.pt by itself
        guess = resolve_run_dir(cfg.train.output, "auto")
        if D.elastic_auto_resume(guess / "last.pt"):
            r = "auto"
    if r and r != "auto" and not Path(r).is_file():
        raise UsageError(f"--resume {r}: no such checkpoint (--resume auto continues the run in --output)")
    run_dir = resolve_run_dir(cfg.train.output, r)
    resume = Path(r) if r and r != "auto" else (run_dir / "last.pt" if r == "auto" else None)
    if resume is not None and not resume.is_file():
        resume = None  # --resume auto with nothing to continue: a new run (said in the log)
    # continuing the run that lives in run_dir; a checkpoint from elsewhere into a non-empty folder would mix two runs
    here = r == "auto" or bool(r) and Path(r).resolve().parent == run_dir.resolve()
    check_run_dir(run_dir, resuming=here, exist_ok=cfg.train.exist_ok)
    cfg.train.output = str(run_dir)
    ckpt, planned = None, None
    if resume is not None:
        ckpt = validate_for_resume(load_checkpoint(resume), resume)
        check_resumable(ckpt, resume, cfg.model.model, None)  # classes: after the scan
        planned = _check_resume_fits(cfg, ckpt, resume)
    return StartPlan(run_dir, resume, ckpt, planned, continuing=here)


def _check_resume_fits(cfg: Config, ckpt: dict, path: Path) -> Optional[int]:
    """D4 (another optimizer) and F1 (a length that ends before the checkpoint); returns the planned epochs."""
    saved = ckpt["config"]
    old_opt = str((saved.get("optim") or {}).get("opt", cfg.optim.opt))
    if old_opt.lower() != cfg.optim.opt.lower():
        raise CheckpointError(f"--opt {cfg.optim.opt} differs from the optimizer of {path} ({old_opt}): its state "
                              f"cannot continue in another optimizer; drop --opt to resume with {old_opt}, or start "
                              f"a new run from these weights with --pretrained {path}")
    done = int((ckpt.get("sampler") or {}).get("epoch", ckpt["epoch"]))
    if cfg.sched.epochs < done:
        raise UsageError(f"--epochs {cfg.sched.epochs}: {path} has {ckpt['epoch']} epoch(s) done already; "
                         f"pass a larger --epochs to train on")
    planned = (saved.get("sched") or {}).get("epochs")
    return int(planned) if isinstance(planned, int) else None
