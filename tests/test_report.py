"""report.html: self-contained (every figure embedded byte for byte), config, curves, tables."""

from __future__ import annotations

import base64
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from fvt.evaluation.evaluate import write_eval_outputs  # noqa: E402
from fvt.evaluation.report import write_report  # noqa: E402


def _fake_run(run_dir):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"model": "faster_vit_nano", "img_size": [32]},
                                                         "optim": {"lr": 0.00123}}))
    (run_dir / "metrics.csv").write_text("epoch,loss,top1\n1,2.5,31.25\n2,1.75,62.5\n")
    fig, ax = plt.subplots()
    ax.plot([1, 2], [2.5, 1.75])
    fig.savefig(run_dir / "curves.png")
    plt.close(fig)
    (run_dir / "bad_files.txt").write_text("a/broken.jpg\tcannot identify image file\n")


def _embedded_pngs(html):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_embeds_every_figure_and_table(tmp_path):
    run_dir = tmp_path / "run"
    _fake_run(run_dir)
    eval_dir = run_dir / "eval"
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(4), 5)
    logits = rng.normal(size=(20, 4)) + np.eye(4)[targets]
    classes = ["ant", "bee", "cat", "dog<x>"]  # a name that must be HTML-escaped
    paths = [str(tmp_path / f"missing_{i}.png") for i in range(20)]  # thumbnails degrade to a label
    write_eval_outputs(eval_dir, logits, targets, paths, classes, {"checkpoint": "best.pt"})
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    html = out.read_text()
    embedded = _embedded_pngs(html)
    pngs = sorted(p for p in eval_dir.glob("*.png") if p.name != "mistakes.png") + [run_dir / "curves.png"]
    assert len(pngs) == 6  # mistakes.png is replaced by the HTML gallery
    for p in pngs:  # each file's exact bytes are in the page
        assert p.read_bytes() in embedded, p.name
    assert "0.00123" in html and "faster_vit_nano" in html           # config
    assert "62.5" in html and "<th>top1</th>" in html               # metrics.csv table
    assert "broken.jpg" in html                                     # bad files
    assert "dog&lt;x&gt;" in html and "dog<x>" not in html          # escaped class names
    assert (eval_dir / "classification_report.txt").read_text().splitlines()[2].split()[0] in html
    assert html.count("(file unreadable)") == len(re.findall(r"row \d+ of <a", html)) > 0  # gallery of mistakes
    m = json.loads((eval_dir / "metrics.json").read_text())
    assert f"{m['top1']:.2f}%" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)        # nothing fetched: readable offline


def test_report_without_eval_or_curves(tmp_path):
    run_dir = tmp_path / "bare"
    run_dir.mkdir()
    out = write_report(run_dir, out=tmp_path / "elsewhere" / "r.html")
    html = out.read_text()
    assert out.is_file() and "No training curves" in html and _embedded_pngs(html) == []
