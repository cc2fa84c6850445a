"""Ctrl-C during training: never lost, never a traceback, and never a torn checkpoint.

While ``fvt train`` runs, SIGINT goes to :class:`InterruptGuard`:

* Outside a step (set-up, data loading between steps, evaluation) it raises KeyboardInterrupt at once,
  as Python would. The state is then at a step boundary, so last.pt can be saved as it stands.
* Inside a step (forward, backward, optimizer, EMA, schedule, the step's bookkeeping and periodic save)
  or inside an epoch's closing (schedule, metrics row, best checkpoints, last.pt), the first Ctrl-C is
  held until that ends, so the checkpoint saved on the way out describes one moment: a Ctrl-C that
  landed mid-step used to save the weights of one step with the RNG or step count of another, and the
  resumed run was not bit-identical. A second Ctrl-C stops at once; nothing is saved then (last.pt keeps
  the last consistent state).
* A Ctrl-C is never lost: if a library swallows the KeyboardInterrupt (or turns it into another error
  while importing), the guard still knows and the run stops at the next check with exit 130.

:func:`stop_interrupted` is what the trainer does on the way out: save last.pt when the state is
consistent and this session trained, keep the old one otherwise, and remove the files of a start that
was interrupted before its first step (nothing was trained: a rerun starts cleanly).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Optional


class InterruptGuard:
    def __init__(self):
        self.holds = 0          # nesting of held regions (a step, an epoch's closing)
        self.pending = False    # a Ctrl-C arrived inside a held region
        self.seen = False       # any Ctrl-C arrived (whether or not it surfaced as KeyboardInterrupt)
        self.torn = False       # a second Ctrl-C stopped a held region in the middle
        self._previous = None
        self._unraisable = None

    # -- installation --------------------------------------------------------------------------------
    def __enter__(self) -> "InterruptGuard":
        global _ACTIVE
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._unraisable, sys.unraisablehook = sys.unraisablehook, self._on_unraisable
            _ACTIVE = self
        return self

    def __exit__(self, *exc) -> None:
        global _ACTIVE
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._unraisable
            self._previous = None
        if _ACTIVE is self:
            _ACTIVE = None

    @property
    def installed(self) -> bool:
        return self._previous is not None

    def _on_unraisable(self, info) -> None:
        # A Ctrl-C that landed in a garbage-collection callback cannot propagate: Python would print it as a
        # traceback and drop it. The guard has noted it (``seen``): the run stops at its next check instead.
        if info.exc_type is KeyboardInterrupt and self.seen:
            return
        self._unraisable(info)

    def _on_sigint(self, signum, frame) -> None:
        # no I/O here: the signal may have interrupted a write to the same stream
        self.seen = True
        if self.holds > 0 and not self.pending:
            self.pending = True
            return
        if self.holds > 0:
            self.torn = True
        raise KeyboardInterrupt

    # -- regions -------------------------------------------------------------------------------------
    def hold(self) -> None:
        self.holds += 1

    def release(self) -> None:
        """End a held region; a Ctrl-C that arrived inside it (or was swallowed by a library) stops the run here."""
        self.holds = max(0, self.holds - 1)
        if self.holds == 0 and self.seen:
            self.pending = False
            raise KeyboardInterrupt

    def reset(self) -> None:
        self.holds = 0

    @contextlib.contextmanager
    def held(self):
        self.hold()
        try:
            yield
        except BaseException:
            self.holds = max(0, self.holds - 1)
            raise
        self.release()

    def mark_torn(self) -> "InterruptGuard":
        """An error other than KeyboardInterrupt came out of a held region after a Ctrl-C: treat the state as torn."""
        self.torn = self.torn or self.holds > 0
        return self

    def acknowledge(self) -> None:
        self.seen = self.pending = self.torn = False
        self.holds = 0

    def check(self) -> None:
        """Stop now if a Ctrl-C arrived that no KeyboardInterrupt carried out (a library swallowed it)."""
        if self.seen and self.holds == 0:
            raise KeyboardInterrupt


class _NoGuard(InterruptGuard):
    """What code outside a training (or off the main thread) gets: regions that do nothing."""

    def hold(self) -> None: ...

    def release(self) -> None: ...

    def check(self) -> None: ...


_ACTIVE: Optional[InterruptGuard] = None
_NONE = _NoGuard()


def active() -> InterruptGuard:
    return _ACTIVE or _NONE


def stop_interrupted(run, guard: InterruptGuard, folder) -> dict:
    """The way out of an interrupted training: what is saved, what is said, the result returned."""
    from .runstate import save_last

    s, last = run.state, run.run_dir / "last.pt"
    trained = run.loop_start is not None and s.step > run.loop_start[1]
    torn = guard.torn
    guard.acknowledge()  # this Ctrl-C is being handled: a new one during the save below stops after it
    if torn:
        kept = f"{last} ({run.last_saved}) is kept" if run.last_saved and last.is_file() else "no last.pt was written"
        note = f"interrupted twice, in the middle of step {s.step + 1}: nothing saved; {kept}"
    elif trained:
        save_last(run, False, gather=False)  # ranks may be interrupted at different points: no collective
        note = f"interrupted: saved {last} at step {s.step}"
    elif run.resume is None:
        # nothing was trained: the files of this start go, as for any start that did not get going, and
        # no step-0 last.pt is left to resume from (rerunning the command starts the same run afresh)
        if run.logger is not None:
            run.logger.close()
        if folder is not None:
            folder.rollback()
        run.log("interrupted before the first step: nothing was trained or kept; run the same command again")
        return {"run_dir": str(run.run_dir), "stopped_by": "interrupted", "step": 0}
    else:
        note = f"interrupted before this session's first step: {last} is unchanged (step {s.step})"
    run.log(f"{note}; continue with fvt train --output {run.run_dir} --resume auto")
    if run.logger is not None:
        run.logger.event("stop", reason="interrupted", step=s.step)
        run.logger.close()
    return {"run_dir": str(run.run_dir), "stopped_by": "interrupted", "step": s.step}
