"""A tracker that fails never costs the training run: probed before the run, then kept off the steps.

* Before the run, each remote tracker is probed within ``FVT_TRACKER_PROBE`` seconds (default 5): an
  MLflow server must accept a connection, a SQLite store must be writable, W&B online must be reachable.
  One that fails is left out with one line saying why (MLflow's own retries took 106-170 s to give up on a
  dead server or a read-only store, and training waited for them).
* During the run, every call of a tracker (its start, each epoch's metrics, the final upload) runs on a
  thread of its own, so a step never waits for a tracker. A call that has not returned after
  ``FVT_TRACKER_TIMEOUT`` seconds (default 60; the final upload four times that) drops the tracker with
  one line; one that raises drops it the same way.

TensorBoard writes local files and is called directly.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Optional


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def probe_timeout() -> float:
    return _seconds("FVT_TRACKER_PROBE", 5.0)


def call_timeout() -> float:
    return _seconds("FVT_TRACKER_TIMEOUT", 60.0)


def describe(e: BaseException) -> str:
    """One line for a tracker's exception; a settings ValidationError (pydantic, W&B) names the setting."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(x) for x in first.get("loc", ())) or "?"
            return (f"invalid setting {loc}={first.get('input')!r}: {first.get('msg')} (read from "
                    f"WANDB_{loc.upper()} or the tracker's settings)")
        except Exception:  # not pydantic after all
            pass
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


# -- the probe ---------------------------------------------------------------------------------------------
def probe(name: str, mlflow_uri: Optional[str] = None) -> Optional[str]:
    """Why ``name`` cannot work from here (checked within the probe budget), or None."""
    budget = probe_timeout()
    if name == "mlflow" and mlflow_uri:
        if mlflow_uri.startswith(("http://", "https://")):
            return _reachable(mlflow_uri, budget)
        if mlflow_uri.startswith("sqlite:///"):
            return _sqlite_writable(Path(mlflow_uri[len("sqlite:///"):].split("?")[0]), budget)
    if name == "wandb":
        if wandb_mode() == "online":
            return _reachable(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"), budget)
    return None


def wandb_mode() -> str:
    """W&B's mode: WANDB_MODE, else online when logged in (an API key or a netrc entry), else offline."""
    return os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(url: str, budget: float) -> Optional[str]:
    from ..models.download import probe as tcp_probe

    why = tcp_probe(url, budget)
    return f"{url} does not answer: {why}" if why else None


def _sqlite_writable(db: Path, budget: float) -> Optional[str]:
    """A write transaction on the store (or a file beside it, for a store not made yet) within ``budget``."""
    import sqlite3
    import tempfile

    try:
        if db.is_file():
            con = sqlite3.connect(str(db), timeout=budget)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
            finally:
                con.close()
        else:
            db.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".fvt-probe-", dir=db.parent)
            os.close(fd)
            os.unlink(tmp)
    except (OSError, sqlite3.Error) as e:
        return f"the store sqlite:///{db} is not writable ({getattr(e, 'strerror', None) or e})"
    return None


# -- the run -------------------------------------------------------------------------------------------------
class GuardedTracker:
    """A tracker (built by ``make`` on the worker thread) whose calls never block the caller."""

    def __init__(self, name: str, make: Callable[[], object], warn: Callable[[str], None]):
        self.name, self.warn, self.timeout = name, warn, call_timeout()
        self.inner = None
        self.failed: Optional[str] = None
        self._jobs: "queue.Queue" = queue.Queue()
        self._busy_since: Optional[float] = None
        self._thread = threading.Thread(target=self._work, args=(make,), daemon=True, name=f"fvt-{name}")
        self._thread.start()

    @property
    def alive(self) -> bool:
        busy = self._busy_since
        if busy is not None and time.monotonic() - busy > self.timeout:
            self._drop(f"no answer for {self.timeout:g} s")
        return self.failed is None

    def start(self, params: dict) -> None:
        self._submit("start", params)

    def log_metrics(self, values: dict, step: int) -> None:
        self._submit("log_metrics", values, step)

    def finish(self, final: dict, files, images, ok: bool) -> None:
        """Queue the final upload and wait for it (bounded), then let the worker end."""
        done = self._submit("finish", final, files, images, ok)
        self._jobs.put(None)
        self.timeout *= 4  # uploading the artifacts may legitimately take longer than an epoch's metrics
        while not done.wait(0.2) and self.alive:
            pass

    # -- the worker ------------------------------------------------------------------------------------------
    def _submit(self, method: str, *args) -> threading.Event:
        done = threading.Event()
        if not self.alive:
            done.set()
            return done
        self._jobs.put((method, args, done))
        return done

    def _work(self, make: Callable[[], object]) -> None:
        self._busy_since = time.monotonic()
        try:
            self.inner = make()
        except Exception as e:  # a tracker that cannot start: the run goes on without it
            self._drop(describe(e), starting=True)
        finally:
            self._busy_since = None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            method, args, done = job
            if self.failed is None:
                self._busy_since = time.monotonic()
                try:
                    getattr(self.inner, method)(*args)
                except Exception as e:
                    self._drop(describe(e))
                finally:
                    self._busy_since = None
            done.set()

    def _drop(self, why: str, starting: bool = False) -> None:
        if self.failed is None:
            self.failed = why
            self.warn(f"warning: --log-to {self.name} {'disabled' if starting else 'stopped'} ({why}); "
                      "the run's own logs go on")
