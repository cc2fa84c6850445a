"""fvt demo end to end, shortened to one epoch (the full recipe is timed by hand: see docs/getting-started.md)."""

from __future__ import annotations

import json

from fvt.cli import main
from fvt.evaluation.demo import write_digits


def test_digits_folder(tmp_path):
    from sklearn.datasets import load_digits

    files = write_digits(tmp_path)
    target = load_digits().target
    assert len(files) == len(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [str(d) for d in range(10)]
    assert [int(f.parent.name) for f in files] == target.tolist()


def test_demo_one_epoch_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    run = out / "run"
    for name in ["report.html", "best.pt", "last.pt", "metrics.csv", "model.onnx", "eval/metrics.json",
                 "eval/predictions.csv", "eval/confusion_matrix.png"]:
        assert (run / name).is_file(), name
        assert str(run / name) in printed or name.startswith("eval/") or name == "metrics.csv", name
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["num_classes"] == 10 and m["num_samples"] > 300
    assert m["top1"] > 30.0  # chance is 10%; one epoch already gets far above it
    html = (run / "report.html").read_text()
    assert "Evaluation" in html and html.count("data:image/png;base64,") >= 7
    assert "fvt train --data" in printed and "fvt predict" in printed


def test_rerun_clears_only_a_previous_demo_run(tmp_path):
    import pytest
    import yaml

    from fvt.errors import UsageError
    from fvt.evaluation.demo import _clear_previous_run

    run, data = tmp_path / "run", tmp_path / "digits"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"data": str(data)}}))
    (run / "best.pt").write_bytes(b"old")
    _clear_previous_run(run, data, log=lambda *_: None)
    assert not run.exists()
    run.mkdir()
    (run / "thesis.txt").write_text("not ours")
    with pytest.raises(UsageError):
        _clear_previous_run(run, data, log=lambda *_: None)
    assert (run / "thesis.txt").exists()
