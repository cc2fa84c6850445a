"""What the task of a run (multi-class or multi-label) changes in training.

* ``resolve_run_task(cfg)`` (start, before any scan): ``--task auto`` becomes the data's task, recorded
  in config.yaml and the checkpoints; a multi-label run selects best.pt by mAP (``--best-metric``
  top1/top5/ema_top1 become map/map/ema_map), is not temperature-calibrated (``--calibrate`` off: its
  thresholds decide), and refuses what needs one class per image (teacher, class weights, relabel).
* ``note_evaluation(run, prefix, logits, targets)`` (each evaluation): the per-label thresholds with the
  best validation F1, tuned on the weights that select best.pt, stored with every checkpoint
  (``thresholds``) so that eval, predict and every export decide label sets the same way.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

MULTILABEL_BEST = {"top1": "map", "top5": "map", "ema_top1": "ema_map"}


def resolve_run_task(cfg: Any) -> str:
    """Fix ``cfg.data.task`` to the data's task and adapt the options that depend on it; returns it."""
    from ..data.multilabel_build import resolve_task

    task = resolve_task(cfg.data.task, cfg.data.data, cfg.data.val_data)
    cfg.data.task = task
    if task != "multilabel":
        if cfg.train.best_metric in ("map", "ema_map"):
            raise UsageError(f"--best-metric {cfg.train.best_metric} is the mean average precision of multi-label "
                             f"runs; this data is multi-class (use top1, or --task multilabel with a CSV of label sets)")
        return task
    if cfg.data.sampler == "balanced":
        raise UsageError("--sampler balanced draws by class, and a multi-label image has several; use "
                         "--pos-weight balanced (loss weights per label) with --sampler random")
    one_class = [flag for flag, on in (
        ("--teacher (distillation matches softmax outputs)", cfg.distill.teacher),
        ("--class-weights (use --pos-weight balanced: a weight per label's positives)", cfg.train.class_weights != "none"),
        ("--relabel (its rows give one new label per image)", cfg.data.relabel),
        (f"--best-metric {cfg.train.best_metric} (select by map)", cfg.train.best_metric in ("balanced_accuracy", "macro_f1")),
    ) if on]
    if one_class:
        raise UsageError(f"{one_class[0]}: this option needs one class per image; multi-label data has a set")
    cfg.train.best_metric = MULTILABEL_BEST.get(cfg.train.best_metric, cfg.train.best_metric)
    # temperature scaling and abstention calibrate a softmax; the per-label thresholds do that job here
    cfg.train.calibrate = False
    return task


def note_evaluation(run: Any, prefix: str, logits, targets) -> None:
    """Multi-label: keep the thresholds tuned on this evaluation when ``prefix`` ("" raw, "ema_") names
    the weights best.pt is selected by."""
    if getattr(run.data, "task", "multiclass") != "multilabel" or targets.ndim != 2 or len(targets) == 0:
        return
    from ..evaluation.multilabel_metrics import sigmoid, tune_thresholds
    from .runstate import selection_weights

    if prefix == ("ema_" if selection_weights(run) == "ema" else ""):
        run.extras["thresholds"] = tune_thresholds(sigmoid(logits), targets.numpy())
