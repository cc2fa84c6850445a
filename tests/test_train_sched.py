"""Schedules stepped per update with warmup, linear lr scaling, checkpoint-safe state dicts."""

import io

import pytest
import torch

from fvt.config import Config
from fvt.engine.optim import build_optimizer, build_scheduler, effective_lr


@pytest.mark.filterwarnings("ignore:PlateauLRScheduler is deprecated")
@pytest.mark.parametrize("name", ["cosine", "step", "multistep", "plateau", "poly", "tanh"])
def test_every_schedule_builds_and_saves_weights_only(name):
    cfg = Config()
    cfg.sched.sched = name
    opt = build_optimizer(torch.nn.Linear(3, 3), cfg, 1e-3)
    sched, _ = build_scheduler(opt, cfg, updates_per_epoch=10)
    sched.step_update(5)
    sched.step(1, 50.0)
    buf = io.BytesIO()
    torch.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    torch.load(buf, weights_only=True)


def test_warmup_is_per_iteration_then_cosine_decays():
    cfg = Config()
    cfg.sched.epochs, cfg.sched.warmup_epochs, cfg.sched.warmup_lr, cfg.sched.min_lr = 4, 1, 0.0, 0.0
    opt = build_optimizer(torch.nn.Linear(3, 3), cfg, 1.0)
    sched, _ = build_scheduler(opt, cfg, updates_per_epoch=10)
    lrs = []
    for step in range(1, 41):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    warm = lrs[:9]
    assert all(b > a for a, b in zip(warm, warm[1:]))            # rises within the first epoch
    assert warm[4] == pytest.approx(0.5, rel=1e-6)              # linear: 5 of 10 updates
    after = lrs[10:]
    assert all(b <= a for a, b in zip(after, after[1:])) and after[-1] < 0.05


def test_linear_lr_scaling_by_global_batch():
    cfg = Config()
    cfg.optim.lr = 1e-3
    assert effective_lr(cfg, 512) == 1e-3
    cfg.optim.lr_base_batch = 256
    assert effective_lr(cfg, 512) == pytest.approx(2e-3)


@pytest.mark.filterwarnings("ignore:PlateauLRScheduler is deprecated")
def test_plateau_resume_reduces_on_the_same_epoch():
    """Patience counters survive a checkpoint: a schedule saved mid-plateau and restored into a
    fresh optimizer/scheduler gives the same lr sequence as the uninterrupted one."""
    from fvt.engine.optim import load_scheduler_state, scheduler_state

    def build():
        cfg = Config()
        cfg.sched.sched, cfg.sched.warmup_epochs, cfg.sched.patience_epochs = "plateau", 0, 2
        cfg.sched.cooldown_epochs, cfg.sched.decay_rate = 0, 0.5
        opt = build_optimizer(torch.nn.Linear(3, 3), cfg, 1.0)
        return opt, build_scheduler(opt, cfg, updates_per_epoch=10)[0]

    metrics = [50.0, 60.0, 59.0, 58.0, 57.0, 56.0, 55.0, 54.0]  # improves once, then stalls
    opt, sched = build()
    full = []
    for e, m in enumerate(metrics):
        sched.step(e + 1, m)
        full.append(opt.param_groups[0]["lr"])
    assert full[-1] < full[0]  # the stall did reduce the lr

    opt, sched = build()
    for e, m in enumerate(metrics[:3]):  # stop after one bad epoch: num_bad_epochs == 1
        sched.step(e + 1, m)
    buf = io.BytesIO()
    torch.save({"scheduler": scheduler_state(sched), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    opt2, sched2 = build()
    opt2.load_state_dict(ckpt["optimizer"])
    load_scheduler_state(sched2, ckpt["scheduler"])
    resumed = full[:3]
    for e, m in enumerate(metrics[3:], start=3):
        sched2.step(e + 1, m)
        resumed.append(opt2.param_groups[0]["lr"])
    assert resumed == full
