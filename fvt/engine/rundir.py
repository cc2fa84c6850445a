"""The run folder: which one a training writes to, who may write there, and nothing left by a failed start.

Rule (issue 13 item 1, documented in docs/readme/lifecycle.md):
- ``--output DIR`` names it. A folder that already holds files is refused unless ``--resume`` continues
  the run in it or ``--exist-ok`` says to start over there (fvt then removes the earlier run's own files).
- Without ``--output``: ``--resume CKPT`` continues in the folder holding CKPT (D9); ``--resume auto``
  continues the newest ``runs/train*`` with a last.pt; otherwise the first free one of
  ``runs/train``, ``runs/train-2``, ``runs/train-3``, ... (relative to the current folder).
- While a run is alive it holds ``RUN/.fvt.lock`` (an OS file lock, released even by SIGKILL), so a
  second run into the same folder is refused (D8, D10).
- A start that fails before the first step removes everything it created (the folder too, if it made it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

from ..errors import UsageError
from ..paths import check_output_dir

RUNS_ROOT = Path("runs")
BASE_NAME = "train"
LOCK_NAME = ".fvt.lock"
# fvt's own files in a run folder: what --exist-ok replaces (the user's other files stay)
RUN_FILE_PATTERNS = ("last.pt", "best.pt", "best-*.pt", "config.yaml", "metrics.csv", "log.jsonl", "curves.png",
                     "report.html", "split.json", "bad_files.txt", "events.out.tfevents.*", "relabel.csv", "trust/*")
# D19: temporaries of an interrupted checkpoint write (atomic_save: .<name>.<random>.tmp; TopK: .best-new.pt)
STALE_TEMP_PATTERNS = (".last.pt.*.tmp", ".best*.pt.*.tmp", ".best-new.pt", "..best-new.pt.*.tmp")


def numbered_runs(root: Path = RUNS_ROOT, base: str = BASE_NAME) -> List[Path]:
    """runs/train, runs/train-2, ... that exist, in number order."""
    found = []
    for p in root.glob(f"{base}*") if root.is_dir() else []:
        suffix = p.name[len(base):]
        if p.is_dir() and (suffix == "" or (suffix.startswith("-") and suffix[1:].isdigit())):
            found.append((1 if suffix == "" else int(suffix[1:]), p))
    return [p for _, p in sorted(found)]


def resolve_run_dir(output: Optional[str], resume: Optional[str], root: Path = RUNS_ROOT) -> Path:
    """The folder this run writes to (see the module docstring for the rule)."""
    if output:
        return Path(output)
    if resume and resume != "auto":
        return Path(resume).parent  # D9: continue beside the checkpoint, not where its config.yaml points
    if resume == "auto":
        with_last = [p for p in numbered_runs(root) if (p / "last.pt").is_file()]
        if with_last:
            return max(with_last, key=lambda p: (p / "last.pt").stat().st_mtime)
    n = 1
    while True:
        p = root / (BASE_NAME if n == 1 else f"{BASE_NAME}-{n}")
        if not p.exists() or not _foreign_entries(p):
            return p
        n += 1


def _foreign_entries(run_dir: Path) -> List[str]:
    """Entries of an existing folder other than a lock file and stale temporaries."""
    if not run_dir.is_dir():
        return []
    return sorted(e.name for e in run_dir.iterdir()
                  if e.name != LOCK_NAME and not any(e.match(p) for p in STALE_TEMP_PATTERNS))


def check_run_dir(run_dir: Path, resuming: bool, exist_ok: bool) -> None:
    """D1 + item 1: a writable folder, and not another run's unless resuming it or --exist-ok."""
    check_output_dir(run_dir, "--output")
    held = _foreign_entries(run_dir)
    if held and not resuming and not exist_ok:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise UsageError(f"--output {run_dir} is not empty ({shown}): pass --resume auto to continue that run, "
                         "--exist-ok to start a new one there (its run files are replaced), or another --output")


class RunFolder:
    """Holds the lock of a run folder and undoes a failed start.

    ``open()`` takes the lock (a second live run is refused), notes what the folder held, removes this
    folder's stale checkpoint temporaries (D19) and, with ``fresh``, the earlier run's files (--exist-ok).
    ``rollback()`` removes what appeared since ``open()``; ``close()`` releases the lock."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.lock = None
        self.made: List[Path] = []  # folders this start created, deepest first
        self.before: set = set()

    def open(self, fresh: bool = False, log=print) -> "RunFolder":
        from filelock import FileLock, Timeout

        p = self.dir
        while not p.exists():
            self.made.append(p)
            p = p.parent
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"--output {self.dir}: cannot create the folder ({e.strerror})") from None
        self.before = {e.name for e in self.dir.iterdir()}
        lock = FileLock(str(self.dir / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            self._remove_made()
            raise UsageError(f"--output {self.dir} is in use by another fvt run that is still alive "
                             f"(it holds {self.dir / LOCK_NAME}); wait for it to end or choose another --output") from None
        self.lock = lock
        stale = [e for pat in STALE_TEMP_PATTERNS for e in self.dir.glob(pat)]
        for e in stale:
            e.unlink()
        if stale:
            log(f"removed {len(stale)} temporary file(s) of an interrupted checkpoint write: "
                f"{', '.join(e.name for e in stale[:3])}")
        if fresh:
            old = sorted({e for pat in RUN_FILE_PATTERNS for e in self.dir.glob(pat) if e.is_file()})
            for e in old:
                e.unlink()
            if old:
                log(f"--exist-ok: removed {len(old)} file(s) of the earlier run in {self.dir} "
                    f"({', '.join(e.name for e in old[:4])}{', ...' if len(old) > 4 else ''})")
        self.before = {e.name for e in self.dir.iterdir()} - {LOCK_NAME}
        return self

    def rollback(self) -> None:
        """Remove what this start created: new entries, then the folders it made (if left empty)."""
        if self.dir.is_dir():
            for e in self.dir.iterdir():
                if e.name not in self.before and e.name != LOCK_NAME:
                    shutil.rmtree(e) if e.is_dir() and not e.is_symlink() else e.unlink()
        self.close()
        self._remove_made()

    def _remove_made(self) -> None:
        for d in self.made:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break

    def close(self) -> None:
        if self.lock is not None:
            lock_file = self.dir / LOCK_NAME
            try:  # unlinked while still held, so no other run can lock this same file meanwhile
                lock_file.unlink()
            except OSError:
                pass
            self.lock.release()
            self.lock = None
