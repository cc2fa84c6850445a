"""The training run's trust hooks (the trainer calls them; the work lives here).

* ``check_options(cfg)``   before any work: --class-weights and --relabel files are readable;
* ``after_data(run)``      the class-imbalance warning (largest class > 5x the smallest);
* ``weigh_classes(run, criterion, mixup)``  --class-weights: the loss replaced by PyTorch's weighted
                           cross-entropy (hard labels with label smoothing, or mixup's soft targets);
* ``calibrate_best(run)``  at the end: temperature scaling and the abstention threshold fitted on the
                           validation split with best.pt's weights, stored in best.pt (``calibration``,
                           ``reject``) and shown in RUN/trust/ (trust.json, reliability before/after,
                           coverage curve) for report.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from . import distributed as D
from .imbalance import check_class_weights_option, class_weights, describe, imbalance_warning, weighted_criterion

# Below this many validation images a fitted temperature or threshold is noise (one image moves the
# precision by several points), so the run keeps T = 1 and no threshold, and says so.
MIN_CALIBRATION_IMAGES = 50


def check_options(cfg) -> None:
    from ..data.relabel import read_relabel
    from ..errors import UsageError

    check_class_weights_option(cfg.train.class_weights)
    if cfg.data.relabel:
        path = Path(cfg.data.relabel).expanduser()
        if not path.is_file():
            raise UsageError(f"--relabel {cfg.data.relabel}: no such file")
        read_relabel(path)  # a malformed file fails here; paths and labels are checked against the scan


def after_data(run) -> None:
    counts = (run.data.counts or {}).get("train") or {}
    note = imbalance_warning(counts, run.cfg)
    if note:
        run.log(note)


def loss_weights(run) -> Optional[torch.Tensor]:
    spec = run.cfg.train.class_weights
    w = class_weights(spec, run.data.classes, (run.data.counts or {}).get("train") or {})
    if w is None:
        return None
    run.log(describe(w, run.data.classes, spec))
    return torch.tensor(w, dtype=torch.float32, device=run.dist.device)


def weigh_classes(run, criterion, mixup):
    """(criterion, mixup) as the trainer built them, the criterion weighted when --class-weights asks."""
    weights = loss_weights(run)
    if weights is None:
        return criterion, mixup
    return weighted_criterion(weights, run.cfg.aug.smoothing, soft_targets=mixup is not None), mixup


def calibrate_best(run) -> None:
    """Every rank runs the validation forward (its shard); rank 0 fits and rewrites best.pt."""
    cfg = run.cfg
    if run.dist.is_main and run.logger is not None and getattr(run.data, "relabel", None):
        run.logger.event("relabel", **run.data.relabel)  # what --relabel changed, in log.jsonl
    best = run.run_dir / "best.pt"
    n_val = len(run.data.val) if run.val_loader is not None and run.data.val is not None else 0
    if cfg.train.calibrate and 0 < n_val < MIN_CALIBRATION_IMAGES:
        run.log(f"calibration skipped: {n_val} validation images (a temperature and an abstention threshold need "
                f"at least {MIN_CALIBRATION_IMAGES}); best.pt keeps the raw probabilities")
        return
    ready = cfg.train.calibrate and n_val > 0
    if not D.broadcast_object(ready and best.is_file() if run.dist.is_main else None):
        return
    try:
        _calibrate(run, best)
    except Exception as e:  # a finished training keeps its best.pt, uncalibrated, rather than failing
        run.log(f"warning: calibration skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")


def _calibrate(run, best: Path) -> None:
    from ..evaluation.trust import TRUST_DIR, checkpoint_entries, fit_trust, trust_summary, write_trust_folder
    from ..models import create_model
    from .checkpoint import atomic_save, load_checkpoint, weights_to_serve
    from .evaluate import run_inference

    ckpt = load_checkpoint(best)
    state, which = weights_to_serve(ckpt)
    model = create_model(ckpt["model_name"], **dict(ckpt.get("model_kwargs") or {}))
    model.load_state_dict(state)
    model.to(run.dist.device)
    logits, targets, _ = run_inference(model, run.val_loader, run.dist.device, run.amp_dtype,
                                       run.cfg.model.channels_last)
    if not run.dist.is_main or len(targets) == 0:
        return
    lg, tg = logits.double().numpy(), targets.numpy()
    fitted = fit_trust(lg, tg, run.cfg.train.target_precision)
    ckpt.update(checkpoint_entries(fitted))
    atomic_save(ckpt, best)
    cal, rej = fitted["calibration"], fitted["reject"]
    write_trust_folder(run.run_dir / TRUST_DIR, trust_summary(lg, tg, cal["temperature"], rej,
                                                             f"validation split, end of training ({which} weights)"))
    answer = (f"answers {100 * rej['coverage']:.1f}% of validation images at precision >= {rej['target_precision']:g}"
              if rej["reached"] else f"(no threshold reaches precision {rej['target_precision']:g}: answers nothing)")
    if cal["temperature"] == 1.0 and cal["ece_before"] == cal["ece_after"]:
        run.log("note: temperature left at 1: the validation split has no mistake to calibrate against")
    run.log(f"calibration: temperature {cal['temperature']:.3f} (ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} "
            f"on {cal['num_samples']} validation images); reject threshold {rej['threshold']:.3f} {answer}; "
            f"stored in {best}")
    if run.logger is not None:
        run.logger.event("calibration", **{k: v for k, v in ckpt["calibration"].items()},
                         reject_threshold=rej["threshold"], reject_coverage=rej["coverage"],
                         target_precision=rej["target_precision"])
