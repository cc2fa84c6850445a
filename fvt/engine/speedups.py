"""The trainer's hooks for time to accuracy: ``--cache``, ``--progressive``, ``--time`` and ``--compile auto``.

Each hook is one call from a phase of ``fvt.engine.trainer``; the logic lives in ``fvt.data.cache``,
``progressive``, ``probe``, ``budget`` and ``compiling``. What they decide is kept on ``run.speed``
(a :class:`SpeedPlan`) and, for the budget, in the checkpoint (key ``budget``). User guide:
docs/train-faster.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from ..errors import UsageError
from . import distributed as D
from .budget import (CLOSING_S, FEW_EPOCHS, Budget, Costs, clock_start, cost_of, duration, fit_epochs, parse_duration, shaped_warmup,
                     smaller_setups)
from .compiling import GAIN, COMPILE_S, compile_choice
from .progressive import ProgressiveModel, check_progressive, describe, parse_progressive, size_schedule


@dataclass
class SpeedPlan:
    start_end: Optional[tuple] = None   # --progressive START, END
    allowed: Optional[List[int]] = None  # the sizes progressive resizing may use
    sizes: Optional[List[int]] = None    # the training size of each epoch (progressive only)
    budget: Optional[Budget] = None
    compile: bool = False
    current: Optional[int] = None        # the size the last epoch trained at
    partial: bool = False                # this process started its first epoch in the middle (resume)

    def sizes_for(self, epochs: int, full: int) -> List[int]:
        if self.start_end is None:
            return [full] * epochs
        return size_schedule(*self.start_end, epochs, self.allowed)


# -- start: checks that need no data ------------------------------------------------------------------
def check_options(cfg) -> None:
    """--time, --progressive and --cache problems, before the data scan."""
    from ..data.shard_source import is_shard_spec

    if cfg.sched.time:
        parse_duration(cfg.sched.time)
    check_progressive(cfg)
    if is_shard_spec(cfg.data.data or ""):
        for flag, on in (("--cache", cfg.data.cache != "none"), ("--progressive", bool(cfg.sched.progressive))):
            if on:
                raise UsageError(f"{flag} works with image folders and CSV files; shards (--data {cfg.data.data}) "
                                 "are streamed")


# -- set-up ---------------------------------------------------------------------------------------------
def setup_cache(run) -> None:
    """--cache: decode every image once (one process per machine), then every process maps the pixels."""
    cfg = run.cfg
    if cfg.data.cache == "none":
        return
    from ..data.cache import attach_caches

    largest = max(run.data.preprocessing.input_size)
    if cfg.sched.progressive:
        largest = max(largest, parse_progressive(cfg.sched.progressive)[1])
    t = time.time()
    lines = attach_caches(run.data, cfg.data.cache, cfg.data.cache_max_gb, run.run_dir, largest, cfg.aug.scale[0],
                          cfg.data.workers, run.dist.local_rank == 0, D.barrier)
    for line in lines:
        run.log(line)
    run.log(f"cache: ready in {time.time() - t:.1f}s")


def _costs(probe, run) -> Costs:
    """One epoch's parts from the probe. Loader workers overlap the model only when the cores allow it."""
    import os

    cfg = run.cfg
    workers, threads = cfg.data.workers, torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def batch(model_s: float, data_s: float) -> float:
        if workers == 0:
            return model_s + data_s
        if cpus >= threads + workers or run.dist.device.type != "cpu":
            return max(model_s, data_s / workers)
        return model_s + data_s / cpus

    bs = cfg.data.batch_size
    train = {s: len(run.train_loader) * batch(t, probe.data_train_s * bs) for s, t in probe.step_s.items()}
    ev = 0.0
    if run.val_loader is not None:
        nets = 2 if run.ema is not None else 1
        eval_bs = cfg.data.eval_batch_size or 2 * bs
        ev = nets * (len(run.val_loader) * batch(probe.eval_step_s, probe.data_val_s * eval_bs) + 0.3 * (workers > 0))
    closing = CLOSING_S
    if getattr(cfg.train, "calibrate", False) and run.val_loader is not None:  # one more validation pass at the end
        closing += ev / (2 if run.ema is not None else 1) + probe.save_s
    return Costs(train, ev, probe.save_s + 0.3, closing)


def plan(run) -> None:
    """Before the schedule is built: progressive sizes, the budget's epochs and warm-up, the compile choice."""
    cfg, st = run.cfg, SpeedPlan()
    run.speed = st
    full = run.data.preprocessing.input_size[0]
    if cfg.sched.progressive:
        from ..data.transforms import TrainTransformAt

        st.start_end, st.allowed = parse_progressive(cfg.sched.progressive), check_progressive(cfg)
        run.train_loader.dataset.transform_at = TrainTransformAt(run.data.preprocessing, cfg.aug)
    ckpt = run.plan.ckpt or {}
    done = int((ckpt.get("sampler") or {}).get("epoch", ckpt.get("epoch", 0))) if ckpt else 0
    seconds = parse_duration(cfg.sched.time) if cfg.sched.time else None
    saved = ckpt.get("budget")
    train_s = None
    if seconds is not None and saved and float(saved["seconds"]) == seconds:  # the same budget: keep its plan
        st.budget = _restored_budget(run, saved, done, full)
        train_s = _train_seconds(st.budget.costs, st.sizes_for(cfg.sched.epochs, full), done)
    elif seconds is not None or cfg.model.compile == "auto":
        if seconds is not None and (saved or {}).get("spent_s", 0) + time.time() - clock_start(run.t_start) >= seconds:
            raise UsageError(f"--time {cfg.sched.time}: the set-up alone took the whole budget; give more time")
        costs = _probe_costs(run, st, full)
        if seconds is not None:
            st.budget, st.compile = _new_budget(run, st, seconds, costs, done, saved, full)
        else:
            train_s = _train_seconds(costs, st.sizes_for(cfg.sched.epochs, full), done)
    if st.budget is None or train_s is not None or cfg.model.compile != "auto":
        st.compile = _choose_compile(run, st, train_s)
    if st.budget is not None:  # a compiled run's first epoch includes compiling: learn from the next one
        st.budget.replan_after = 2 if st.compile else 1
    st.sizes = st.sizes_for(cfg.sched.epochs, full) if st.start_end else None
    if st.sizes:
        run.log(f"progressive resizing {st.start_end[0]}->{st.start_end[1]} px (evaluation at {full} px): "
                f"{describe(st.sizes)}")


def _restored_budget(run, saved: dict, done: int, full: int) -> Budget:
    """A resume under the same budget keeps the plan (an exact resume stays exact) unless the restart
    itself ate the time it needed: then the plan shrinks, down to no more epoch at all."""
    cfg, st = run.cfg, run.speed
    b = Budget.restore(saved, clock_start(run.t_start))
    fits = fit_epochs(b.left(), b.costs, lambda e: st.sizes_for(e, full), done, cfg.train.eval_every)
    epochs = D.broadcast_object(min(fits, b.epochs) if run.dist.is_main else None)
    if epochs <= done:
        more = duration(max(60.0, b.spent() + b.costs.train_at(full) + b.costs.eval + b.costs.closing))
        raise UsageError(f"--time {cfg.sched.time}: the budget is spent ({duration(b.spent())} of "
                         f"{duration(b.seconds)} with this restart); resume with a larger --time, e.g. --time {more}")
    note = "keeping the plan" if epochs == b.epochs else f"the rest no longer fits: {epochs} epochs instead"
    run.log(f"time budget {duration(b.seconds)}: {duration(b.spent_before)} spent before this resume, "
            f"{duration(b.spent())} now; {note} of {b.epochs} epochs")
    b.epochs = epochs
    cfg.sched.epochs, cfg.sched.warmup_epochs = epochs, b.warmup
    return b


def _probe_costs(run, st: SpeedPlan, full: int) -> Costs:
    from .probe import measure

    sizes = sorted({*(st.start_end or ()), full} if st.start_end else {full})
    for module in ("fvt.evaluation.report", "fvt.evaluation.trust"):  # the closing's imports now, in the measured set-up
        try:
            __import__(module)
        except ImportError:
            pass
    probe = measure(run, sizes)  # every rank probes (they share the machine as in training), rank 0's counts
    run.log(f"probe ({probe.wall_s:.1f}s): train step {', '.join(f'{t:.2f}s at {s} px' for s, t in sorted(probe.step_s.items()))}, "
            f"evaluation batch {probe.eval_step_s:.2f}s, data {1000 * probe.data_train_s:.1f} ms/image, "
            f"checkpoint {probe.save_s:.1f}s")
    return D.broadcast_object(_costs(probe, run) if run.dist.is_main else None)


def _train_seconds(costs: Costs, sizes: List[int], done: int) -> float:
    return cost_of(Costs(costs.train, 0.0, 0.0, 0.0), sizes, done, 1)


def _choose_compile(run, st: SpeedPlan, train_s: Optional[float]) -> bool:
    cfg = run.cfg
    if cfg.model.compile != "auto":
        if cfg.model.compile == "on":
            run.log("compile: on (--compile on)")
        return cfg.model.compile == "on"
    sizes = len(set(st.sizes_for(cfg.sched.epochs, run.data.preprocessing.input_size[0])))
    if cfg.train.max_steps and train_s is not None:  # a run cut short by --max-steps trains less
        train_s *= min(1.0, cfg.train.max_steps / (cfg.sched.epochs * max(1, run.updates_per_epoch)))
    choice, why = compile_choice("auto", run.dist.device, train_s, sizes)
    choice, why = D.broadcast_object((choice, why) if run.dist.is_main else None)
    run.log(why)
    return bool(choice)


def _new_budget(run, st: SpeedPlan, seconds: float, costs: Costs, done: int, saved, full: int):
    """Fit the epochs into what is left of ``seconds`` (rank 0 decides, every rank follows); returns
    the budget and the compile choice."""
    out = _fit_budget(run, st, seconds, costs, done, saved, full) if run.dist.is_main else None
    state, compile_on, lines, error = D.broadcast_object(out)
    for line in lines:
        run.log(line)
    if error:
        raise UsageError(error)
    b = Budget.restore(state, clock_start(run.t_start))
    b.spent_before = float(saved["spent_s"]) if saved else 0.0
    b.replan_after = 2 if compile_on else 1
    run.cfg.sched.epochs, run.cfg.sched.warmup_epochs = b.epochs, b.warmup
    return b, compile_on


def _fit_budget(run, st: SpeedPlan, seconds: float, costs: Costs, done: int, saved, full: int) -> tuple:
    cfg, lines = run.cfg, []
    spent_before = float(saved["spent_s"]) if saved else 0.0
    b = Budget(seconds, 0, 0.0, costs, spent_before=spent_before, t0=clock_start(run.t_start))

    def fit() -> int:
        return fit_epochs(b.left(), b.costs, lambda e: st.sizes_for(e, full), done, cfg.train.eval_every)

    epochs, compile_on = fit(), cfg.model.compile == "on"
    if cfg.model.compile == "auto":
        sizes = st.sizes_for(max(epochs, done + 1), full)
        compile_on, why = compile_choice("auto", run.dist.device, _train_seconds(b.costs, sizes, done), len(set(sizes)))
        lines.append(why)
    if compile_on:  # plan with the compiled step and the compile time
        n = len(set(st.sizes_for(max(epochs, done + 1), full)))
        b.costs.train = {s: v / (1 + GAIN) for s, v in b.costs.train.items()}
        b.spent_before += COMPILE_S.get(run.dist.device.type, COMPILE_S["cuda"]) * n
        epochs = fit()
        b.spent_before = spent_before
    epoch_s = b.costs.train_at(full) + b.costs.per_epoch
    if epochs <= done:
        hints = smaller_setups(cfg.model.model, full, b.costs, b.left(), cfg.train.eval_every)
        return None, False, lines, (
            f"--time {cfg.sched.time}: not even one more epoch fits (one epoch ~{epoch_s:.0f}s, an evaluation "
            f"~{b.costs.eval:.0f}s, {duration(b.spent())} spent already); "
            + (f"would fit: {'; '.join(hints)}" if hints else "give more time, or a smaller --model or --img-size "
               "(see `fvt models`)"))
    b.epochs = epochs
    b.warmup = shaped_warmup(cfg.sched.warmup_epochs, epochs) if not saved and done == 0 else cfg.sched.warmup_epochs
    total = b.spent() + cost_of(b.costs, st.sizes_for(epochs, full), done, cfg.train.eval_every)
    lines.append(f"time budget {duration(seconds)}: {epochs} epochs (one ~{epoch_s:.1f}s, an evaluation "
                 f"~{b.costs.eval:.1f}s every {cfg.train.eval_every} and at the end, {duration(b.spent())} spent on "
                 f"the set-up so far; estimated end at {duration(total)}), warm-up {b.warmup:g} epochs, "
                 f"{cfg.sched.sched} schedule over the {epochs} epochs")
    if epochs - done < FEW_EPOCHS:
        hints = smaller_setups(cfg.model.model, full, b.costs, b.left(), cfg.train.eval_every)
        lines.append(f"warning: only {epochs - done} epoch(s) fit in --time {cfg.sched.time}"
                     + (f"; these would fit more: {'; '.join(hints)}" if hints else ""))
    return b.state(), compile_on, lines, None


# -- wrappers and epochs ---------------------------------------------------------------------------------
def wrap(run, model):
    """The model the steps call: compiled (per size) and, with progressive resizing, sized per batch."""
    st = run.speed
    compile_fn = torch.compile if st.compile else None
    full = run.data.preprocessing.input_size[0]
    if st.sizes and any(s != full for s in st.sizes):
        return ProgressiveModel(model, compile_fn)
    return compile_fn(model) if compile_fn else model


def start_epoch(run) -> None:
    """Before an epoch: its training size, and the budget's clock for this epoch."""
    st, s = run.speed, run.state
    if st.budget is not None:
        st.budget.start_epoch()
        st.partial = s.position > 0
    if not st.sizes:
        return
    size = st.sizes[min(s.epoch, len(st.sizes) - 1)]
    full = run.data.preprocessing.input_size[0]
    run.train_loader.batch_sampler.size = None if size == full else size
    if size != st.current:
        run.log(f"progressive resizing: epoch {s.epoch + 1} trains at {size} px")
        st.current = size


def end_epoch(run, row: dict, evaluate: Callable[[], dict]) -> bool:
    """After an epoch (before its row is logged): learn its real cost and re-plan the budget if needed;
    True when time is up. A run that stops here gets its evaluation now if the epoch had none (``evaluate``),
    so that best.pt holds the final weights' score.

    While less than half the run is done the plan follows the measurements both ways (the lr is
    still near its peak, so a longer or shorter cosine barely changes it); later it only shrinks."""
    st = run.speed
    b = st.budget
    if b is None:
        return False
    cfg, done = run.cfg, run.state.epoch + 1
    full = run.data.preprocessing.input_size[0]
    size = st.sizes[done - 1] if st.sizes else full
    learn = not st.partial and b.trained + 1 >= b.replan_after
    wall = b.end_epoch(size, row.get("eval_time_s"), learn)
    fits = fit_epochs(b.left(), b.costs, lambda e: st.sizes_for(e, full), done, cfg.train.eval_every)
    epochs = fits if (learn and done < b.epochs / 2) or fits < b.epochs else b.epochs
    epochs, stop = D.broadcast_object((epochs, epochs <= done < b.epochs) if run.dist.is_main else None)
    if stop:
        run.log(f"time budget {duration(b.seconds)}: {duration(b.spent())} spent, another epoch would not end in "
                f"time; stopping after epoch {done} of {b.epochs}")
        if run.val_loader is not None and "eval_time_s" not in row:
            t = time.time()
            row.update(evaluate())
            row["eval_time_s"] = time.time() - t
        return True
    if epochs != b.epochs:
        _replan(run, epochs, wall, done)
    return False


def _replan(run, epochs: int, wall: float, done: int) -> None:
    from .optim import build_scheduler

    cfg, st, b = run.cfg, run.speed, run.speed.budget
    before = b.epochs
    b.epochs = run.epochs = cfg.sched.epochs = epochs
    if st.start_end:
        st.sizes = st.sizes_for(epochs, run.data.preprocessing.input_size[0])
    if run.scheduler is not None:
        run.scheduler, _ = build_scheduler(run.optimizer, cfg, run.updates_per_epoch)
        run.scheduler.step_update(num_updates=run.state.step)
        run.parts.scheduler = run.scheduler
    if run.dist.is_main:
        cfg.save(run.run_dir / "config.yaml")
    run.log(f"time budget {duration(b.seconds)}: epoch {done} took {wall:.1f}s; re-planned to {epochs} "
            f"epochs (was {before}), the {cfg.sched.sched} schedule rebuilt at step {run.state.step}")
    if run.logger is not None:
        run.logger.event("budget", epochs=epochs, was=before, spent_s=b.spent(), seconds=b.seconds)


def checkpoint_state(run) -> dict:
    """Extra checkpoint keys: the budget (plain types)."""
    b = getattr(run.speed, "budget", None) if run.speed is not None else None
    return {"budget": b.state()} if b is not None else {}


def finish(run, summary: dict) -> List[str]:
    """The budget's closing line (and summary keys)."""
    b = getattr(run.speed, "budget", None) if run.speed is not None else None
    if b is None:
        return []
    spent = b.spent()
    summary.update(budget_s=b.seconds, spent_s=spent)
    if run.logger is not None:
        run.logger.event("budget", seconds=b.seconds, spent_s=spent, epochs=run.state.epoch)
    return [f"time budget {duration(b.seconds)}: used {duration(spent)} ({spent / b.seconds:.0%})"]


def release(run) -> None:
    """The run ended: free a ram cache now (a disk cache stays in the run folder)."""
    if run.data is not None:
        from ..data.cache import release_caches

        release_caches(run.data)
