"""Fault injection on trackers: a dead MLflow server, a read-only store, a tracker that hangs mid-run, a bad
W&B setting. What must hold: the run starts in seconds and never waits for a tracker; a tracker that fails
is dropped with one line saying why; the run's own files are complete."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fvt.engine import trackers
from fvt.engine.runlog import RunLogger


def _wait_for(predicate, seconds=60.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not predicate():
        time.sleep(0.05)
    return predicate()


def test_a_dead_mlflow_server_is_left_out_in_seconds(tmp_path, monkeypatch):
    """MLflow's own retries held the run back for 170 s before training started."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    said = []
    t0 = time.monotonic()
    assert trackers.open_trackers(["mlflow"], tmp_path / "run", said.append) == []
    assert time.monotonic() - t0 < 15
    assert len(said) == 1 and "--log-to mlflow disabled" in said[0] and "127.0.0.1:9" in said[0], said


@contextlib.contextmanager
def read_only_view(src: Path, view: Path):
    """``view``: a read-only bind mount of ``src`` (needs root and mount; skipped where it cannot be had)."""
    view.mkdir(parents=True, exist_ok=True)
    try:
        first = subprocess.run(["mount", "--bind", str(src), str(view)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot bind-mount here ({e})")
    if first.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root / CAP_SYS_ADMIN): {first.stderr.strip()[:120]}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True, capture_output=True, timeout=20)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True, timeout=20)


def test_a_read_only_store_is_left_out_in_seconds(tmp_path, monkeypatch):
    """The default store (mlflow.db beside the run folder) on a read-only file system: MLflow retried for
    two minutes before giving up."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "src").mkdir()
    with read_only_view(tmp_path / "src", tmp_path / "ro") as ro:
        said = []
        t0 = time.monotonic()
        assert trackers.open_trackers(["mlflow"], ro / "run", said.append) == []
        assert time.monotonic() - t0 < 15
    assert len(said) == 1 and "not writable" in said[0] and "mlflow.db" in said[0], said


class _Hangs(trackers.Tracker):
    """A tracker whose server stops answering after the start: log_metrics blocks (up to 30 s)."""

    name = "mlflow"
    release = threading.Event()
    logged: list = []

    def __init__(self, run_dir):
        pass

    def log_metrics(self, values, step):
        self.logged.append(step)
        self.release.wait(30)


def test_a_tracker_that_hangs_mid_run_never_stalls_an_epoch(tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.FACTORIES, "mlflow", _Hangs)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///nowhere")  # (no probe for a file store)
    monkeypatch.setenv("FVT_TRACKER_TIMEOUT", "1")
    said = []
    logger = RunLogger(tmp_path / "run", trackers="mlflow", params={"lr": 0.1})
    monkeypatch.setattr(logger, "print", said.append)
    try:
        t0 = time.monotonic()
        logger.epoch({"epoch": 1, "step": 2, "train_loss": 1.0})
        assert time.monotonic() - t0 < 3, "the epoch waited for the tracker"
        assert _wait_for(lambda: _Hangs.logged == [1], 10)
        time.sleep(1.2)
        t0 = time.monotonic()
        logger.epoch({"epoch": 2, "step": 4, "train_loss": 0.9})  # the hung call is noticed and the tracker dropped
        logger.close()
        assert time.monotonic() - t0 < 3
    finally:
        _Hangs.release.set()
    assert [s for s in said if "--log-to mlflow stopped (no answer for 1 s)" in s], said
    assert [int(r["epoch"]) for r in logger.epochs] == [1, 2]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 3  # header + both rows


def test_a_bad_wandb_setting_names_the_setting(tmp_path, monkeypatch):
    """The error showed only "ValidationError: 1 validation error for Settings"."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "bogus")
    said = []
    opened = trackers.open_trackers(["wandb"], tmp_path / "run", said.append)
    assert _wait_for(lambda: said, 60), "no line about the bad setting"
    assert all(not t.alive for t in opened)
    line = said[0]
    assert "--log-to wandb disabled" in line and "mode='bogus'" in line and "online" in line, line
    assert "WANDB_MODE" in line and "\n" not in line


def test_training_goes_on_with_a_dead_mlflow_server(tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    import fvt

    from test_train_helpers import make_folder

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    data = make_folder(tmp_path / "data", classes=2, per_class=5, size=32)
    t0 = time.monotonic()
    run = fvt.train(data=str(data), output=str(tmp_path / "run"), model="faster_vit_nano", img_size=32, epochs=1,
                    batch_size=4, workers=0, warmup_epochs=0, log_to="mlflow", amp="none", ema=False,
                    auto_augment="none", reprob=0.0)
    took = time.monotonic() - t0
    assert run.stopped_by == "epochs" and (run.run_dir / "metrics.csv").is_file()
    out = capsys.readouterr()
    assert "--log-to mlflow disabled" in out.out + out.err
    assert took < 120, f"{took:.0f} s: the run waited for MLflow (its retries took 170 s)"
