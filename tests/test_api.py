"""The Python API (fvt.train / evaluate / predict / export), run in-process on a tiny generated
folder, each result checked against what the run wrote to disk or a library reading it back."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import REPO, make_folder  # noqa: E402

import fvt  # noqa: E402

TINY = dict(model="faster_vit_nano", img_size=32, workers=0, warmup_epochs=0, auto_augment=None, reprob=0.0,
            log_every=1, batch_size=8, amp="none", lr=2e-3, seed=0)


class Recorder:
    """A callback object as an embedding application would write one."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, row):
        self.epochs.append(row)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = make_folder(root / "data", classes=3, per_class=10)
    steps, rows, recorder = [], [], Recorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FVT_PROGRESS", "off")
        result = fvt.train(data=str(data), output=str(root / "run"), epochs=2, on_step=steps.append,
                           on_epoch_end=rows.append, callbacks=[recorder], **TINY)
    return root, data, result, steps, rows, recorder


def _csv_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_train_returns_typed_result_matching_the_run_files(run):
    root, _, result, steps, rows, recorder = run
    assert isinstance(result, fvt.TrainResult)
    assert result.run_dir == root / "run" and result.stopped_by == "epochs" and result.epochs == 2
    assert result.best_checkpoint == root / "run" / "best.pt" and result.best_checkpoint.is_file()
    assert result.last_checkpoint.is_file()
    assert result.config.model.model == "faster_vit_nano" and result.config.model.img_size == [32]
    on_disk = _csv_rows(root / "run" / "metrics.csv")
    assert [int(r["epoch"]) for r in on_disk] == [1, 2] == [r["epoch"] for r in result.history]
    for mine, theirs in zip(result.history, on_disk):
        assert mine["val_top1"] == pytest.approx(float(theirs["val_top1"]))
    best = max(float(r["val_top1"]) for r in on_disk)
    assert result.best_metric == pytest.approx(best)
    assert result.best_epoch == next(int(r["epoch"]) for r in on_disk if float(r["val_top1"]) == pytest.approx(best))
    assert result.metrics["val_top1"] == pytest.approx(float(on_disk[-1]["val_top1"]))


def test_callbacks_see_every_logged_step_and_epoch(run):
    root, _, result, steps, rows, recorder = run
    logged = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    step_events = [e for e in logged if e["kind"] == "step"]
    assert len(steps) == len(step_events) == result.steps > 0  # log_every=1: one record per step
    assert [s["step"] for s in steps] == [e["step"] for e in step_events]
    assert [s["loss"] for s in steps] == pytest.approx([e["loss"] for e in step_events])
    assert [r["epoch"] for r in rows] == [1, 2] and [r["epoch"] for r in recorder.epochs] == [1, 2]
    assert rows[-1]["val_top1"] == result.history[-1]["val_top1"]


def test_evaluate_agrees_with_its_predictions_csv(run):
    from sklearn.metrics import accuracy_score

    root, _, result, *_ = run
    ev = fvt.evaluate(result.best_checkpoint, output=root / "eval", workers=0, log=lambda s: None)
    assert isinstance(ev, fvt.EvalResult)
    assert ev.output_dir == root / "eval" and (root / "eval" / "metrics.json").is_file()
    rows = _csv_rows(root / "eval" / "predictions.csv")
    assert ev.num_samples == len(rows) > 0
    assert ev.top1 == pytest.approx(100 * accuracy_score([r["true"] for r in rows], [r["pred"] for r in rows]))
    assert ev.metrics["top1"] == ev.top1 and all(p.is_file() for p in ev.reports)
    assert ev.top5 is None  # 3 classes: top-5 is meaningless and not reported


def test_predict_matches_eval_and_reports_unreadable_files(run):
    root, data, result, *_ = run
    rows = _csv_rows(root / "eval" / "predictions.csv") if (root / "eval").is_dir() else None
    if rows is None:
        fvt.evaluate(result.best_checkpoint, output=root / "eval", workers=0, log=lambda s: None)
        rows = _csv_rows(root / "eval" / "predictions.csv")
    broken = root / "broken.png"
    broken.write_bytes(b"not a png")
    nowhere = str(root / "nowhere" / "*.png")
    preds = fvt.predict(result.best_checkpoint, (p for p in [*(r["path"] for r in rows), str(broken), nowhere]), topk=2)
    assert isinstance(preds, fvt.PredictResult) and len(preds) == len(rows)
    assert preds.labels() == [r["pred"] for r in rows]  # same weights, same preprocessing as fvt eval
    assert [p.source for p in preds] == [r["path"] for r in rows]
    assert all(len(p.topk) == 2 and p.topk[0] == (p.label, p.prob) for p in preds)
    assert [s for s, _ in preds.failed] == [nowhere, str(broken)]  # nothing dropped silently
    from PIL import Image

    with Image.open(rows[0]["path"]) as im:  # one in-memory image: a result of one, same answer as its file
        single = fvt.predict(result.best_checkpoint, im.copy())
    assert len(single) == 1 and single[0].label == preds[0].label and single[0].prob == pytest.approx(preds[0].prob)
    folder = fvt.predict(result.best_checkpoint, data / "class_1")  # a folder is searched like the CLI does
    assert len(folder) == 10 and preds.classes == folder.classes


def test_export_onnx_and_safetensors_read_back(run):
    from safetensors import safe_open

    root, data, result, *_ = run
    onnx_res = fvt.export(result.best_checkpoint, "onnx", output=root / "m.onnx")
    assert isinstance(onnx_res, fvt.ExportResult) and onnx_res.path == root / "m.onnx" and onnx_res.path.is_file()
    assert onnx_res.max_abs_diff is not None and onnx_res.max_abs_diff <= 1e-4
    images = sorted(str(p) for p in (data / "class_2").glob("*.png"))[:4]
    by_torch = fvt.predict(result.best_checkpoint, images)
    by_onnx = fvt.predict(onnx_res.path, images)  # onnxruntime runs the exported file
    assert by_onnx.labels() == by_torch.labels()
    assert [p.prob for p in by_onnx] == pytest.approx([p.prob for p in by_torch], abs=1e-4)
    st = fvt.export(result.best_checkpoint, "safetensors")  # default name: next to the checkpoint
    assert st.path == result.run_dir / "best.safetensors" and st.sidecar.is_file()
    with safe_open(str(st.path), "pt") as f:
        assert json.loads(f.metadata()["fvt"])["classes"] == st.classes == ["class_0", "class_1", "class_2"]


def test_errors_raise_fvt_errors_not_system_exit(tmp_path, run):
    _, _, result, *_ = run
    with pytest.raises(fvt.UsageError, match="did you mean 'epochs'"):
        fvt.train(data=str(tmp_path), epoch=3)
    with pytest.raises(fvt.FvtError):
        fvt.train(data=str(tmp_path / "missing"), output=str(tmp_path / "run"), epochs=1, **TINY)
    with pytest.raises(fvt.DataError, match="nothing to predict"):
        fvt.predict(result.best_checkpoint, str(tmp_path / "*.jpg"))
    with pytest.raises(fvt.UsageError, match="format"):
        fvt.export(result.best_checkpoint, "tflite")
    with pytest.raises(fvt.UsageError, match=".onnx"):
        fvt.export(result.best_checkpoint, "onnx", output=tmp_path / "m.bin")
    with pytest.raises(fvt.CheckpointError):
        fvt.evaluate(tmp_path / "none.pt")


def test_a_failing_callback_stops_the_run(tmp_path):
    data = make_folder(tmp_path / "data", classes=2, per_class=6)

    def boom(rec):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fvt.train(data=str(data), output=str(tmp_path / "run"), epochs=1, on_step=boom, **TINY)


def test_config_file_then_keywords(tmp_path):
    from fvt.api import build_config

    cfg_file = tmp_path / "x.yaml"
    cfg_file.write_text("model: faster_vit_nano\nepochs: 7\nlr: 0.01\n")
    cfg = build_config(str(cfg_file), epochs=3, img_size=64)
    assert (cfg.model.model, cfg.sched.epochs, cfg.optim.lr, cfg.model.img_size) == ("faster_vit_nano", 3, 0.01, [64])


def test_import_is_lazy_and_dir_lists_the_api():
    code = ("import sys, fvt; lazy = [m for m in ('fvt.api', 'fvt.evaluation', 'fvt.engine.trainer') if m in sys.modules];"
            "print(lazy); print(sorted(n for n in dir(fvt) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO))).stdout.splitlines()
    assert out[0] == "[]"
    listed = eval(out[1])
    for name in ("train", "evaluate", "predict", "export", "TrainResult", "EvalResult", "PredictResult",
                 "ExportResult", "Classifier", "FvtError", "create_model"):
        assert name in listed
    assert all(hasattr(fvt, n) for n in listed)


def test_py_typed_ships_as_package_data():
    import tomllib

    assert (REPO / "fvt" / "py.typed").is_file()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["fvt"]


# -- optional parts (extras): a missing one is one line naming the extra, before any work --------------
def test_missing_onnx_extra_names_the_extra(run, tmp_path, monkeypatch, capsys):
    from fvt.cli import main
    from fvt.extras import MissingExtra

    root, data, result, *_ = run
    onnx_file = root / "m.onnx"
    if not onnx_file.is_file():
        fvt.export(result.best_checkpoint, "onnx", output=onnx_file)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import fails as when it is not installed
    with pytest.raises(MissingExtra, match=r"pip install 'fastervit-toolkit\[onnx\]'"):
        fvt.export(result.best_checkpoint, "onnx", output=tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    assert main(["export", "--checkpoint", str(result.best_checkpoint), "--format", "onnx",
                 "--output", str(tmp_path / "y.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("fvt: error")] == err[-1:]  # one error line, last
    assert err[-1].startswith("fvt: error: ONNX export needs onnx") and "[onnx]" in err[-1]
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 2  # refused before training
    assert "[onnx]" in capsys.readouterr().err and not (tmp_path / "demo").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra, match=r"\[onnx\]"):
        fvt.predict(onnx_file, sorted((data / "class_0").glob("*.png"))[:1])


def test_run_without_tensorboard_says_which_extra(tmp_path, monkeypatch, capsys):
    from fvt.engine.runlog import RunLogger

    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    logger = RunLogger(tmp_path / "run")
    logger.event("start", step=0)
    assert logger.tb is None
    logger.close()
    assert "pip install 'fastervit-toolkit[tensorboard]'" in capsys.readouterr().out
    assert (tmp_path / "run" / "log.jsonl").is_file()  # the run's own logs go on
    assert not any(p.name.startswith("events.out") for p in (tmp_path / "run").iterdir())
