"""--log-to: TensorBoard, MLflow (local SQLite store) and W&B (offline) get params, epoch metrics,
final metrics, the report and figures -- each read back with the library's own reader (W&B: the
offline run file parsed from its documented log format into W&B's own protobuf records)."""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import pytest

from fvt.engine.runlog import RunLogger
from fvt.engine.trackers import parse_log_to
from fvt.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY, make_folder  # noqa: E402

ROWS = [{"epoch": 1, "step": 4, "lr": 1e-3, "train_loss": 1.5, "val_loss": 1.2, "val_top1": 40.0},
        {"epoch": 2, "step": 8, "lr": 5e-4, "train_loss": 1.0, "val_loss": 0.9, "val_top1": 62.5}]
PARAMS = {"model": "faster_vit_nano", "lr": 0.001, "img_size": [32], "ema": True}


def _fake_run(run_dir: Path, log_to: str) -> RunLogger:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("model: {model: faster_vit_nano}\n")
    logger = RunLogger(run_dir, trackers=log_to, params=PARAMS)
    logger.event("start", epochs=2)
    for row in ROWS:
        logger.epoch(row)
    logger.event("stop", reason="epochs", step=8, best=62.5)
    (run_dir / "report.html").write_text("<html><body>fvt report</body></html>")
    logger.close()
    return logger


def test_parse_log_to_names_and_errors():
    assert parse_log_to("tensorboard, mlflow,tensorboard") == ["tensorboard", "mlflow"]
    assert parse_log_to("none") == [] and parse_log_to(["wandb"]) == ["wandb"]
    with pytest.raises(UsageError, match="unknown tracker.*tensorboard, mlflow, wandb"):
        parse_log_to("tensorbord")


def test_missing_library_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    with pytest.raises(UsageError, match=r"fastervit-toolkit\[mlflow\]"):
        RunLogger(Path("unused"), enabled=False, trackers="mlflow")


def test_nothing_is_created_before_the_first_record(tmp_path):
    RunLogger(tmp_path / "never", trackers="tensorboard")
    assert not (tmp_path / "never").exists()


def test_tensorboard_gets_scalars_hparams_and_figures(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import matplotlib.pyplot as plt

    run = tmp_path / "tb"
    run.mkdir()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(run / "extra_figure.png")
    plt.close(fig)
    _fake_run(run.with_name("tb2"), "tensorboard")  # a run without figures of its own
    logger = RunLogger(run, trackers="tensorboard", params=PARAMS)
    for row in ROWS:
        logger.epoch(row)
    logger.event("stop", reason="epochs", best=62.5)
    logger.close()
    acc = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert [e.value for e in acc.Scalars("epoch/val_top1")] == [40.0, 62.5]
    assert {"figures/curves", "figures/extra_figure"} <= set(acc.Tags()["images"])
    hp = EventAccumulator(str(run / "hparams")).Reload()
    assert [e.value for e in hp.Scalars("hparam/best")] == [62.5]
    assert "_hparams_/session_start_info" in hp.summary_metadata


def test_mlflow_sqlite_store_reads_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")

    db = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fvt-test")
    _fake_run(tmp_path / "run-a", "mlflow")
    assert list((tmp_path / "cwd").iterdir()) == []  # artifacts beside the store, not in the current folder
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    mlflow.set_tracking_uri(db)
    runs = mlflow.search_runs(experiment_names=["fvt-test"], output_format="list")
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_name == "run-a"
    assert r.data.params["model"] == "faster_vit_nano" and float(r.data.params["lr"]) == 0.001
    assert r.data.metrics["final_best"] == 62.5 and r.data.metrics["val_top1"] == 62.5  # last value
    client = mlflow.tracking.MlflowClient(db)
    history = client.get_metric_history(r.info.run_id, "val_top1")
    assert sorted((m.step, m.value) for m in history) == [(1, 40.0), (2, 62.5)]
    names = {f.path for f in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "metrics.csv", "config.yaml", "curves.png"} <= names
    (tmp_path / "dl").mkdir()  # mlflow before 3 does not make the destination itself
    local = client.download_artifacts(r.info.run_id, "report.html", str(tmp_path / "dl"))
    assert "fvt report" in Path(local).read_text()
    # a run that dies without close() is closed at exit, not left RUNNING
    (tmp_path / "run-b").mkdir()
    crashed = RunLogger(tmp_path / "run-b", trackers="mlflow", params=PARAMS)
    crashed.epoch(ROWS[0])
    crashed._at_exit()  # what atexit runs
    (b,) = mlflow.search_runs(experiment_names=["fvt-test"], filter_string="attributes.run_name = 'run-b'",
                              output_format="list")
    assert b.info.status == "KILLED" and b.data.metrics["val_top1"] == 40.0


def test_mlflow_default_store_stays_beside_the_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    _fake_run(runs / "exp1", "mlflow")
    assert (runs / "mlflow.db").is_file() and (runs / "mlartifacts").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing in the current folder


def _wandb_records(run_file: Path):
    """Records of a W&B offline run file: a 7-byte W&B header, then LevelDB-style log blocks
    (32 KiB; each chunk: crc32, length, type full/first/middle/last) holding wandb Record protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunks, out = run_file.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        body, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            chunks = body
        elif kind in (3, 4):
            chunks += body
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(chunks)
            out.append(rec)
    return out


def _items(items):
    return {"/".join(i.nested_key) or i.key: i.value_json for i in items}


def test_wandb_offline_run_files_read_back(tmp_path, monkeypatch):
    import json

    pytest.importorskip("wandb", reason="the wandb extra is not installed")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "wb"
    _fake_run(run, "wandb")
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    for _ in range(60):  # wandb-core finishes writing the file in its own process
        recs = _wandb_records(files[0])
        kinds = [r.WhichOneof("record_type") for r in recs]
        if "exit" in kinds:
            break
        time.sleep(0.5)
    config = {}
    for r in recs:  # the config arrives with the run record and/or as config updates
        config.update(_items(r.run.config.update) if r.WhichOneof("record_type") == "run" else
                      _items(r.config.update) if r.WhichOneof("record_type") == "config" else {})
    assert json.loads(config["model"]) == "faster_vit_nano" and json.loads(config["lr"]) == 0.001
    history = [_items(r.history.item) for r in recs if r.WhichOneof("record_type") == "history"]
    tops = [(json.loads(h["epoch"]), json.loads(h["val_top1"])) for h in history if "val_top1" in h]
    assert tops == [(1, 40.0), (2, 62.5)]
    assert any(h.get("figures/curves/_type") == '"image-file"' for h in history)  # the figure, as an image
    summary = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert json.loads(summary["best"]) == 62.5
    arts = [r.artifact for r in recs if r.WhichOneof("record_type") == "artifact"]
    assert len(arts) == 1 and arts[0].type == "report"
    assert {"report.html", "metrics.csv", "curves.png"} <= {e.path for e in arts[0].manifest.contents}
    assert "exit" in kinds


def test_train_cli_logs_to_three_trackers(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    from fvt.cli import main

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for k, v in {"MLFLOW_TRACKING_URI": db, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                 "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "wdata")}.items():
        monkeypatch.setenv(k, v)
    data = make_folder(tmp_path / "data", classes=2, per_class=6)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--output", str(out), *TINY, "--epochs", "1", "--batch-size", "4",
                 "--amp", "none", "--log-to", "tensorboard,mlflow,wandb"]) == 0
    mlflow.set_tracking_uri(db)
    (r,) = mlflow.search_runs(experiment_names=["fvt"], output_format="list")
    assert r.data.params["log_to"] == "tensorboard,mlflow,wandb" and "val_top1" in r.data.metrics
    names = {f.path for f in mlflow.tracking.MlflowClient(db).list_artifacts(r.info.run_id)}
    assert "report.html" in names
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert list(out.glob("events.out.tfevents*"))


def test_bad_tracker_fails_before_any_work(tmp_path, capsys):
    from fvt.cli import main

    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--output", str(out), "--log-to", "mlfow"]) == 2
    assert "unknown tracker" in capsys.readouterr().err
    assert not out.exists()
