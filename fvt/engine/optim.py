"""Optimizer and lr schedule from the config, through timm's factories.

timm's ``create_optimizer_v2`` puts norms, biases (any 1-d parameter) and the names the model
lists in ``no_weight_decay()`` (position-bias MLPs, carrier-token position embeddings) in a
group without weight decay, and applies layer-wise lr decay via ``group_matcher()``.
SophiaG is built by a timm ``OptimizerRegistry`` of its own (fvt.engine.sophia), so it gets the
same treatment.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..config import Config
from ..config.sections import default_warmup_epochs
from ..errors import UsageError


def effective_lr(cfg: Config, global_batch: int) -> float:
    """The peak lr: --lr, scaled linearly by global_batch / --lr-base-batch when that is set."""
    o = cfg.optim
    if o.lr_base_batch:
        return o.lr * global_batch / o.lr_base_batch
    return o.lr


def build_optimizer(model: torch.nn.Module, cfg: Config, lr: float) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2, list_optimizers

    o = cfg.optim
    name = o.opt.lower()
    known = set(list_optimizers()) | {"sophia", "sophiag"}
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown optimizer --opt {o.opt!r}{hint}")
    kwargs = {}
    if o.opt_eps is not None:
        kwargs["eps"] = o.opt_eps
    if o.opt_betas is not None:
        kwargs["betas"] = tuple(float(b) for b in o.opt_betas)
    if name in ("sophia", "sophiag"):
        kwargs["rho"] = o.sophia_rho
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError("nothing to train: every parameter is frozen (check --freeze)")
    create = create_optimizer_v2
    if name in ("sophia", "sophiag"):
        from .sophia import create_sophia as create  # timm's factory, through a registry of fvt's own
    try:
        return create(
            model, opt=name, lr=lr, weight_decay=o.weight_decay, momentum=o.momentum,
            layer_decay=o.layer_decay, **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"optimizer {o.opt!r}: {str(e).splitlines()[0]}") from None


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, updates_per_epoch: int) -> Tuple[Optional[object], int]:
    """A timm scheduler stepped per optimizer update (``step_update``); returns (scheduler, epochs)."""
    s = cfg.sched
    if s.sched == "none":
        # timm applies a group's layer-decay ``lr_scale`` when its schedulers set the lr; with no
        # schedule the constant lr must carry the scale itself.
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        return None, s.epochs
    from timm.scheduler import MultiStepLRScheduler, create_scheduler_v2

    # timm's plateau schedule only steps per epoch (on the validation metric); the others per update
    per_epoch = s.sched == "plateau"
    sched, epochs = create_scheduler_v2(
        optimizer, sched=s.sched, num_epochs=s.epochs, decay_epochs=s.decay_epochs,
        decay_milestones=list(s.decay_milestones), cooldown_epochs=s.cooldown_epochs,
        patience_epochs=s.patience_epochs, decay_rate=s.decay_rate, min_lr=s.min_lr,
        warmup_lr=s.warmup_lr, step_on_epochs=per_epoch,
        warmup_epochs=default_warmup_epochs(s.epochs) if s.warmup_epochs is None else s.warmup_epochs,
        updates_per_epoch=max(1, updates_per_epoch),
        plateau_mode="min" if cfg.train.best_metric == "loss" else "max")
    if isinstance(sched, MultiStepLRScheduler) and not per_epoch:
        # timm applies milestone m at update m - 1 (its historical convention); the lr is meant to
        # drop at the first update of epoch m, i.e. update m * updates_per_epoch.
        sched.decay_t = [int(t) + 1 for t in sched.decay_t]
    return sched, s.epochs


def scheduler_state(sched) -> Optional[dict]:
    """The scheduler's state for a checkpoint. timm's plateau schedule saves only ``best`` and
    ``last_epoch`` of the torch ReduceLROnPlateau inside it; the patience and cooldown counters
    are added so a resumed run reduces the lr on the same epoch as an uninterrupted one."""
    if sched is None:
        return None
    state = dict(sched.state_dict())
    inner = getattr(sched, "lr_scheduler", None)
    if isinstance(inner, torch.optim.lr_scheduler.ReduceLROnPlateau):
        inner_state = inner.state_dict()
        state["fvt_plateau"] = {k: inner_state[k] for k in ("num_bad_epochs", "cooldown_counter", "best")}
    return state


def load_scheduler_state(sched, state: Optional[dict]) -> None:
    if sched is None or not state:
        return
    state = dict(state)
    extra = state.pop("fvt_plateau", None)
    sched.load_state_dict(state)
    inner = getattr(sched, "lr_scheduler", None)
    if extra and isinstance(inner, torch.optim.lr_scheduler.ReduceLROnPlateau):
        for k, v in extra.items():
            setattr(inner, k, v)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest group lr (groups scaled down by layer decay report less)."""
    return max(g["lr"] for g in optimizer.param_groups)
