"""fvt train's trust options end to end: --relabel (applied, recorded, folder untouched, errors before
any work), --class-weights with mixup, --best-metric balanced_accuracy, and the calibration and
abstention threshold fitted on the validation split and stored in best.pt."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY, make_folder  # noqa: E402

from fvt.cli import main  # noqa: E402


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trusttrain")
    data = make_folder(root / "data", classes=3, per_class=8)
    before = tree_digest(data)
    val = make_folder(root / "val", classes=3, per_class=17, seed=1)  # 51 images: enough to calibrate on
    relabel = root / "fixes.csv"
    relabel.write_text("path,new_label,issue\nclass_0/img_1.png,class_2,label_issue\nclass_1/img_2.png,drop,x\n"
                       f"{data / 'class_2' / 'img_3.png'},,\n")  # an absolute path; empty new_label: keep
    out = root / "run"
    rc = main(["train", "--data", str(data), "--val-data", str(val), "--output", str(out), *TINY, "--epochs", "2",
               "--batch-size", "6",
               "--relabel", str(relabel), "--class-weights", "balanced", "--mixup", "0.2",
               "--best-metric", "balanced_accuracy", "--no-ema"])
    assert rc == 0
    return root, data, out, relabel, before


def test_calibration_and_reject_threshold_stored_in_best_pt(run):
    root, data, out, relabel, before = run
    ck = torch.load(out / "best.pt", weights_only=True)
    cal, rej = ck["calibration"], ck["reject"]
    assert {"temperature", "ece_before", "ece_after"} <= set(cal) and cal["temperature"] > 0
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9           # T = 1 is a candidate: the fit never loses
    assert rej["target_precision"] == 0.95 and 0.0 <= rej["coverage"] <= 1.0 and 0.0 <= rej["threshold"] <= 1.0
    assert all(isinstance(v, float) for v in rej["curve"]["threshold"])  # plain types only
    assert ck["selection_metric"] == "val_balanced_accuracy"
    summary = json.loads((out / "trust" / "trust.json").read_text())
    assert summary["calibration"]["temperature"] == pytest.approx(cal["temperature"])
    events = [json.loads(line) for line in (out / "log.jsonl").open()]
    assert any(e["kind"] == "calibration" and e["temperature"] == cal["temperature"] for e in events)
    relabel_event = next(e for e in events if e["kind"] == "relabel")
    assert relabel_event["relabelled"] == 1 and relabel_event["dropped"] == 1
    assert "Reliability before" in (out / "report.html").read_text()


def test_relabel_applied_recorded_and_the_folder_untouched(run):
    from fvt.config import Config
    from fvt.data import build_data

    root, data, out, relabel, before = run
    assert tree_digest(data) == before
    assert (out / "relabel.csv").read_bytes() == relabel.read_bytes()
    cfg = Config.from_yaml(out / "config.yaml")
    assert cfg.data.relabel == str(relabel)
    relabel.unlink()                                               # the run keeps its own copy
    bundle = build_data(cfg, out, write=False)
    labels = {p.relative_to(data).as_posix(): bundle.classes[t] for p, t in bundle.train.samples}
    assert labels["class_0/img_1.png"] == "class_2" and "class_1/img_2.png" not in labels
    assert labels["class_2/img_3.png"] == "class_2" and len(labels) == 23 and len(bundle.val) == 51
    assert bundle.relabel == {"file": str(out / "relabel.csv"), "rows": 2, "relabelled": 1, "dropped": 1}


@pytest.mark.parametrize("row,expect", [("class_0/nope.png,class_1", "nope.png is not a usable image"),
                                        ("class_0/img_0.png,clas_1", "did you mean 'class_1'?")])
def test_relabel_errors_are_one_line_before_any_work(run, tmp_path, capsys, row, expect):
    root, data, out, relabel, before = run
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,new_label\n{row}\n")
    target = tmp_path / "never"
    rc = main(["train", "--data", str(data), "--output", str(target), *TINY, "--relabel", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and expect in err[-1] and err[-1].startswith("fvt: error:") and f"{bad}:2" in err[-1]
    assert not target.exists()                                     # the failed start left nothing behind


def test_class_weights_file_errors_are_one_line_and_leave_nothing(run, tmp_path, capsys):
    root, data, out, relabel, before = run
    w = tmp_path / "w.csv"
    w.write_text("class,weight\nclass_0,2\nclass_9,1\n")
    rc = main(["train", "--data", str(data), "--output", str(tmp_path / "x"), *TINY, "--class-weights", str(w)])
    assert rc == 2 and "class_9" in capsys.readouterr().err
    w.write_text("class_0,-1\n")
    assert main(["train", "--data", str(data), "--output", str(tmp_path / "y"), *TINY, "--class-weights", str(w)]) == 2
    assert "must be a positive number" in capsys.readouterr().err
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), ["w.csv"])
