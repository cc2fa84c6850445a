"""fvt eval: metrics against independent scikit-learn computations, output files, figures,
class-mismatch error, EMA selection, and torchrun (2 processes == 1 process)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, classification_report,
                             confusion_matrix, log_loss, roc_auc_score, top_k_accuracy_score)

sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import CLASSES, make_checkpoint, make_folder  # noqa: E402

from fvt.cli import main  # noqa: E402
from fvt.evaluation.evaluate import FIGURES  # noqa: E402
from fvt.evaluation.metrics import compute_metrics  # noqa: E402


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ece_loop(probs, targets, bins=15):
    # Independent, deliberately naive version: loop over bins with explicit interval tests.
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.sum() / len(conf) * abs((pred[sel] == targets[sel]).mean() - conf[sel].mean())
    return total


def test_metrics_match_independent_sklearn():
    rng = np.random.default_rng(1)
    n, c = 200, 7
    targets = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[targets] * rng.random((n, 1))
    classes = [f"k{i}" for i in range(c)]
    m = compute_metrics(logits, targets, classes)
    probs = _softmax(logits)
    pred = probs.argmax(1)
    onehot = np.eye(c)[targets]
    assert m["top1"] == pytest.approx(100 * accuracy_score(targets, pred))
    assert m["top5"] == pytest.approx(100 * top_k_accuracy_score(targets, probs, k=5))
    assert m["loss"] == pytest.approx(log_loss(targets, probs), rel=1e-6)
    assert m["balanced_accuracy"] == pytest.approx(100 * balanced_accuracy_score(targets, pred))
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(onehot, probs, average="micro"))
    assert m["average_precision_macro"] == pytest.approx(average_precision_score(onehot, probs, average="macro"))
    assert m["average_precision_micro"] == pytest.approx(average_precision_score(onehot, probs, average="micro"))
    assert m["confusion_matrix"] == confusion_matrix(targets, pred).tolist()
    rows = np.asarray(m["confusion_matrix_normalized"])
    np.testing.assert_allclose(rows, confusion_matrix(targets, pred, normalize="true"))
    rep = classification_report(targets, pred, target_names=classes, output_dict=True, zero_division=0)
    for name in classes:
        for key in ("precision", "recall", "f1-score", "support"):
            assert m["per_class"][name][key] == pytest.approx(rep[name][key])
    assert m["ece"] == pytest.approx(_ece_loop(probs, targets), abs=1e-12)
    assert "top5" not in compute_metrics(logits[:, :5], np.minimum(targets, 4), classes[:5])


def test_metrics_class_without_samples_is_left_out_of_macro_auc():
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 3, 60)  # class 3 never occurs
    logits = rng.normal(size=(60, 4))
    m = compute_metrics(logits, targets, ["a", "b", "c", "d"])
    probs = _softmax(logits)
    expected = np.mean([roc_auc_score(targets == k, probs[:, k]) for k in range(3)])
    assert m["roc_undefined_classes"] == ["d"]
    assert m["roc_auc_macro"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    data = make_folder(root / "data", per_class=6)
    ckpt = make_checkpoint(root / "run" / "best.pt", data)
    return root, data, ckpt


def _independent_probs(ckpt_path: Path, paths):
    """Model forward with a hand-written eval pipeline (resize, normalise) -- not fvt's transform."""
    import fvt

    ck = torch.load(ckpt_path, weights_only=True)
    model = fvt.create_model(ck["model_name"], **ck["model_kwargs"]).eval()
    model.load_state_dict(ck["state_dict"])
    pre = ck["preprocessing"]
    h, w = pre["input_size"]
    mean, std = np.array(pre["mean"]), np.array(pre["std"])
    batch = []
    for p in paths:  # crop_pct 1.0 and square images: eval = plain bilinear resize to (h, w)
        a = np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float64) / 255.0
        batch.append(((a - mean) / std).transpose(2, 0, 1))
    with torch.no_grad():
        return torch.softmax(model(torch.tensor(np.stack(batch), dtype=torch.float32)), 1).numpy()


def test_eval_writes_every_output_with_correct_numbers(run, capsys):
    root, data, ckpt = run
    out = root / "out_data"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--output", str(out), "--batch-size", "5"]) == 0
    for name in ["metrics.json", "classification_report.txt", "predictions.csv", "report.html", *FIGURES]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in FIGURES:
        with Image.open(out / name) as im:
            assert im.size[0] > 100 and im.size[1] > 50
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "true", "pred", *CLASSES]
    assert len(rows) - 1 == 6 * len(CLASSES)
    probs = np.array([[float(v) for v in r[3:]] for r in rows[1:]])
    targets = np.array([CLASSES.index(r[1]) for r in rows[1:]])
    assert [r[1] for r in rows[1:]] == [Path(r[0]).parent.name for r in rows[1:]]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    ref = _independent_probs(ckpt, [r[0] for r in rows[1:]])
    np.testing.assert_allclose(probs, ref, atol=2e-4)
    m = json.loads((out / "metrics.json").read_text())
    assert m["top1_unit"] == "percent" and m["weights"] == "raw"
    assert m["top1"] == pytest.approx(100 * accuracy_score(targets, ref.argmax(1)))
    assert m["loss"] == pytest.approx(log_loss(targets, ref, labels=range(3)), abs=1e-3)
    assert m["num_samples"] == len(targets) and m["classes"] == CLASSES
    report_txt = (out / "classification_report.txt").read_text()
    assert all(c in report_txt for c in CLASSES) and "macro avg" in report_txt
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(FIGURES) - 1  # mistakes.png: an HTML gallery instead
    wrong = sum(r[1] != r[2] for r in rows[1:])
    gallery = html.split("Most confident mistakes", 1)[1].split("<h2>", 1)[0]  # heat maps sit beside, class cam
    assert gallery.count('<img alt="') == min(wrong, 24)  # one thumbnail per shown mistake
    assert gallery.count("class=\"cam\"") == min(wrong, 24)  # and its Grad-CAM heat map
    assert "macro avg" in html and "top-1 accuracy" in html
    assert "top1 " in capsys.readouterr().out


def test_eval_default_val_split_and_ema(run):
    root, data, ckpt = run
    assert main(["eval", "--checkpoint", str(ckpt)]) == 0
    raw = json.loads((ckpt.parent / "eval" / "metrics.json").read_text())
    assert main(["eval", "--checkpoint", str(ckpt), "--ema", "--output", str(root / "ema")]) == 0
    ema = json.loads((root / "ema" / "metrics.json").read_text())
    # The default val split is 20% per class of 6 images -> 1 or 2 per class, never the whole folder.
    assert 0 < raw["num_samples"] < 6 * len(CLASSES) and raw["data"] == "run val split"
    assert ema["weights"] == "ema" and ema["num_samples"] == raw["num_samples"]
    assert ema["loss"] != raw["loss"]  # the fixture's EMA weights are perturbed copies


def test_class_mismatch_is_one_line_error(run, tmp_path, capsys):
    _, _, ckpt = run
    other = make_folder(tmp_path / "other", per_class=2, classes=["circle", "square", "triangle"])
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(other), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "triangle" in err and "stripes" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_eval_missing_checkpoint_and_no_ema(run, tmp_path, capsys):
    root, data, _ = run
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    ck = make_checkpoint(tmp_path / "r" / "best.pt", data, ema=False)
    assert main(["eval", "--checkpoint", str(ck), "--ema", "--data", str(data)]) == 2
    assert "EMA" in capsys.readouterr().err


def test_eval_under_torchrun_equals_single_process(run, tmp_path):
    root, data, ckpt = run
    single = root / "out_data"
    if not (single / "predictions.csv").exists():
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--output", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
           "-m", "fvt", "eval", "--checkpoint", str(ckpt), "--data", str(data), "--output", str(tmp_path / "dist"),
           "--batch-size", "4", "--device", "cpu"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    assert b["world_size"] == 2 and b["num_samples"] == a["num_samples"]
    for key in ("top1", "balanced_accuracy", "roc_auc_macro", "ece"):
        assert b[key] == pytest.approx(a[key], abs=1e-6)
    assert b["confusion_matrix"] == a["confusion_matrix"]
    rows_a = (single / "predictions.csv").read_text().splitlines()
    rows_b = (tmp_path / "dist" / "predictions.csv").read_text().splitlines()
    assert sorted(r.split(",")[0] for r in rows_a) == sorted(r.split(",")[0] for r in rows_b)
