"""``--time BUDGET``: the most epochs that fit in the time the user has, and a schedule shaped to them.

The plan. The whole run counts: from the start of ``fvt train`` (data scan, cache, model set-up,
the probe itself) through every epoch's training, its evaluations, checkpoint writes and logs, to
the closing report. After the set-up, ``fvt.engine.probe`` measures what an epoch's parts cost on
this machine; the number of epochs is then the largest ``E`` with

    spent so far + sum over epochs (train at that epoch's size + checkpoint and logs)
      + evaluations (every --eval-every epochs and the last) + closing  <=  (1 - MARGIN) x budget.

The warm-up keeps the recipe's length (``--warmup-epochs``) but at most ``WARMUP_SHARE`` of the run;
the cosine (or any other) schedule then spans the ``E`` epochs, exactly as if ``--epochs E`` had
been given. ``--epochs`` itself is replaced: given together with ``--time`` on the command line it
is an error (both would set the length); a config file's epochs give way to the budget.

Course corrections. The probe cannot see everything (DataLoader workers competing with the model
for cores, a machine that gets busier), so after every epoch the estimates become the medians of
what the measured epochs took (training, evaluation, and the gap between epochs: checkpoint
writes, logs) and the plan is redone: both ways while less than half of the run is done (the lr
is still near its peak, so a longer or shorter cosine barely moves it; the first epoch, and the
first two of a compiled run, are still in the warm-up), later only shorter. The schedule is rebuilt
at the current step, as a resume with another ``--epochs`` does. If not even one more epoch fits,
the run stops (``stopped_by: time``) and finishes normally.

Resume: the checkpoint holds the budget, the seconds already spent and the plan (key ``budget``).
A resume under the same ``--time`` keeps the plan (an exact resume stays exact) and counts its own
time on top of the time spent (the pause between the two processes does not count); when its own
restart has eaten the time the plan needed, the plan shrinks, and a budget already spent is
refused (exit 2) naming a ``--time`` that would continue. A resume with another ``--time``
re-plans what is left of the new budget. From the command line the clock starts with the
process (Python's start-up is part of the wait); from ``fvt.train()`` with the call.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

from ..errors import UsageError

MARGIN = 0.03          # of the budget, kept for what the estimates miss
CLOSING_S = 3.0        # the closing: report.html, trackers, summary
LOG_S = 0.3            # per epoch: metrics.csv, curves.png, TensorBoard (the checkpoint write is measured)
FEW_EPOCHS = 5         # fewer than this: the log names smaller set-ups that would fit
WARMUP_SHARE = 0.1     # the warm-up keeps the recipe's epochs, at most this share of the run
MAX_EPOCHS = 100_000

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


_COUNT_FROM: Optional[float] = None  # when the clock started: the `fvt train` process, for the command line


def count_from_process_start() -> None:
    """Make budgets count from the start of this process (`fvt train`: Python's start-up and imports
    are part of the user's wait), not from the start of ``train()`` (the API: a notebook's kernel is older)."""
    import sys
    from pathlib import Path

    global _COUNT_FROM
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    launched = (spec is not None and spec.name.split(".")[0] == "fvt") or Path(sys.argv[0] or "").name == "fvt"
    _COUNT_FROM = process_start_time() if launched else None  # not when main() is called inside another program


def process_start_time() -> Optional[float]:
    """When this process started (Linux /proc), or None."""
    import os

    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def clock_start(run_start: float) -> float:
    return min(run_start, _COUNT_FROM) if _COUNT_FROM else run_start


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1h30m``, ``1.5h`` -> seconds."""
    s = str(text).strip().lower()
    parts = _PART.findall(s)
    if not parts or _PART.sub("", s).strip():
        hint = f"; did you mean {s}m?" if re.fullmatch(r"\d+(\.\d+)?", s) else ""
        raise UsageError(f"--time {text}: expected a duration such as 90s, 15m, 2h or 1h30m{hint}")
    seconds = sum(float(v) * _UNIT[u] for v, u in parts)
    if seconds <= 0:
        raise UsageError(f"--time {text}: the budget must be longer than 0 s, e.g. 90s, 15m, 2h")
    return seconds


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class Costs:
    """Seconds each part of the run costs (from the probe, then from measured epochs)."""

    train: Dict[int, float]    # one epoch's training at each training size
    eval: float                # one evaluation of the validation set (model and EMA)
    per_epoch: float           # checkpoint write and logs
    closing: float = CLOSING_S

    def train_at(self, size: int) -> float:
        if size in self.train:
            return self.train[size]
        near = min(self.train, key=lambda s: abs(s - size))  # scale the nearest by pixels
        return self.train[near] * (size / near) ** 2


def evaluated(epoch_index: int, epochs: int, eval_every: int) -> bool:
    """Whether epoch ``epoch_index`` (0-based) evaluates (as the trainer decides)."""
    return (epoch_index + 1) % max(1, eval_every) == 0 or epoch_index + 1 == epochs


def cost_of(costs: Costs, sizes: List[int], done: int, eval_every: int) -> float:
    """Seconds from the end of epoch ``done`` to the end of the run that trains ``sizes`` (one per epoch)."""
    epochs = len(sizes)
    total = costs.closing
    for e in range(done, epochs):
        total += costs.train_at(sizes[e]) + costs.per_epoch
        total += costs.eval if evaluated(e, epochs, eval_every) else 0.0
    return total


def fit_epochs(seconds_left: float, costs: Costs, sizes_for: Callable[[int], List[int]], done: int,
               eval_every: int) -> int:
    """The most epochs (at least ``done``) whose remaining cost fits in ``seconds_left``; ``done``
    when not even one more fits."""
    if cost_of(costs, sizes_for(done + 1), done, eval_every) > seconds_left:
        return done
    lo, hi = done + 1, MAX_EPOCHS
    while lo < hi:  # the cost grows with the epochs
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost_of(costs, sizes_for(mid), done, eval_every) <= seconds_left else (lo, mid - 1)
    return lo


def shaped_warmup(recipe_warmup: float, epochs: int) -> float:
    return min(float(recipe_warmup), WARMUP_SHARE * epochs)


@dataclass
class Budget:
    """The budget of one run and where it stands (checkpointed as plain types)."""

    seconds: float
    epochs: int
    warmup: float
    costs: Costs
    spent_before: float = 0.0          # seconds spent by earlier processes of this run (resume)
    replan_after: int = 1              # epochs this process trains before it learns from measurements
    t0: float = field(default_factory=time.time)
    trained: int = 0                   # epochs completed by this process
    mark: float = field(default_factory=time.time)   # when the current epoch started
    ended: Optional[float] = None      # when the last epoch's evaluation ended (the gap after it: saving, logs)
    ratios: List[float] = field(default_factory=list)   # measured / estimated training time, per epoch
    evals: List[float] = field(default_factory=list)
    gaps: List[float] = field(default_factory=list)

    def __post_init__(self):
        self.estimated = dict(self.costs.train)  # the probe's (or the plan's) training times, for the ratios

    def spent(self) -> float:
        return self.spent_before + time.time() - self.t0

    def left(self) -> float:
        return self.seconds * (1 - MARGIN) - self.spent()

    def state(self) -> dict:
        return {"seconds": self.seconds, "spent_s": self.spent(), "epochs": self.epochs, "warmup": self.warmup,
                "costs": asdict(self.costs)}

    @classmethod
    def restore(cls, state: dict, t0: float) -> "Budget":
        c = dict(state["costs"])
        c["train"] = {int(k): float(v) for k, v in c["train"].items()}
        return cls(float(state["seconds"]), int(state["epochs"]), float(state["warmup"]), Costs(**c),
                   spent_before=float(state["spent_s"]), t0=t0, mark=time.time())

    def start_epoch(self) -> None:
        now = time.time()
        if self.ended is not None:
            self.gaps.append(now - self.ended)
            self.costs.per_epoch = statistics.median(self.gaps)
        self.mark = now

    def end_epoch(self, size: int, eval_s: Optional[float], learn: bool) -> float:
        """The epoch that just ended (training at ``size``, then its evaluation) took how long; with
        ``learn``, the estimates become medians of what the measured epochs took (one slow epoch does
        not swing the plan). Not learnt from: a first epoch that includes compiling, a resumed partial one."""
        now = time.time()
        wall, self.ended = now - self.mark, now
        self.trained += 1
        if not learn:
            return wall
        if eval_s is not None:
            self.evals.append(eval_s)
            self.costs.eval = statistics.median(self.evals)
        est = Costs(self.estimated, 0.0, 0.0).train_at(size)
        self.ratios.append(max(wall - (eval_s or 0.0), 1e-3) / est)
        r = statistics.median(self.ratios)
        self.costs.train = {s: v * r for s, v in self.estimated.items()}
        return wall


# -- when the budget is too short ---------------------------------------------------------------------
LADDER = ("faster_vit_nano", "faster_vit_micro", "faster_vit_0_224", "faster_vit_1_224", "faster_vit_2_224",
          "faster_vit_3_224", "faster_vit_4_224", "faster_vit_5_224", "faster_vit_6_224")


def _flops(name: str, size: int) -> Optional[int]:
    """FLOPs of ``name`` at ``size`` px, from the table `fvt models` shows (None: cannot be windowed)."""
    from ..models.commands import model_row

    try:
        return int(model_row(name, [size, size])["flops"])
    except UsageError:
        return None


def smaller_setups(model: str, size: int, costs: Costs, seconds_left: float, eval_every: int,
                   flops: Callable[[str, int], Optional[int]] = _flops, limit: int = 3) -> List[str]:
    """Smaller variants and image sizes that would fit ``FEW_EPOCHS`` or more epochs, the most capable
    (by FLOPs) first; an epoch's cost is scaled by the FLOPs ratio to this run's."""
    here = flops(model, size)
    if not here:
        return []
    variants = LADDER[:LADDER.index(model) + 1] if model in LADDER else LADDER
    sizes = sorted({size, *range(32, size, 32)}, reverse=True)
    found = []
    for name in variants:
        for s in sizes:
            f = flops(name, s)
            if not f or f >= here:
                continue
            r = f / here
            scaled = Costs({s: costs.train_at(size) * r}, costs.eval * r, costs.per_epoch, costs.closing)
            n = fit_epochs(seconds_left, scaled, lambda e, s=s: [s] * e, 0, eval_every)
            if n >= FEW_EPOCHS:
                found.append((f, f"--model {name} --img-size {s} (~{n} epochs)"))
    return [text for _, text in sorted(found, reverse=True)[:limit]]
