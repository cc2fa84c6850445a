"""report.html: self-contained (every figure embedded byte for byte), config, curves, tables."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

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


# -- figures that tell the truth ------------------------------------------------------------------
def _calibrated_probs(n, conf, acc, classes=4, seed=0):
    """n samples whose max probability is exactly ``conf`` and whose top-1 is right for a fraction ``acc``."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    right = np.arange(n) < round(acc * n)
    preds = np.where(right, targets, (targets + 1) % classes)
    probs = np.full((n, classes), (1 - conf) / (classes - 1))
    probs[np.arange(n), preds] = conf
    return probs, targets


@pytest.mark.parametrize("conf,acc,kind", [(0.9, 0.6, "over-confident"), (0.6, 0.9, "under-confident")])
def test_reliability_diagram_draws_the_gap_both_ways(conf, acc, kind):
    from matplotlib.patches import Rectangle

    from fvt.evaluation.figures import reliability_axes
    from fvt.evaluation.metrics import expected_calibration_error

    probs, targets = _calibrated_probs(200, conf, acc)
    calib = expected_calibration_error(probs, targets)
    assert calib["ece"] == pytest.approx(abs(conf - acc))
    fig = reliability_axes(calib)
    ax = fig.axes[0]
    bars = {c.get_label(): [p for p in c.patches if isinstance(p, Rectangle)] for c in ax.containers}
    (acc_bar,) = bars["accuracy in bin"]
    assert acc_bar.get_y() == 0 and acc_bar.get_height() == pytest.approx(acc)   # accuracy, not confidence
    (gap,) = bars[f"gap: {kind}"]
    assert gap.get_height() > 0                                                  # never drawn negative
    assert gap.get_y() == pytest.approx(min(conf, acc))
    assert gap.get_y() + gap.get_height() == pytest.approx(max(conf, acc))
    other = "under-confident" if kind == "over-confident" else "over-confident"
    assert f"gap: {other}" not in bars
    plt.close(fig)


def test_roc_has_a_log_fpr_panel(tmp_path):
    from fvt.evaluation.figures import roc_figure
    from fvt.evaluation.metrics import roc_pr_curves

    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(3), 300)
    logits = rng.normal(size=(900, 3)) + 6 * np.eye(3)[targets]  # ~99.9% accurate: linear ROC says nothing
    e = np.exp(logits - logits.max(1, keepdims=True))
    curves = roc_pr_curves(e / e.sum(1, keepdims=True), targets, ["a", "b", "c"])
    import matplotlib.pyplot as mpl

    saved = []
    orig = mpl.close
    mpl.close = lambda fig=None: saved.append(fig)  # keep the figure to inspect it
    try:
        roc_figure(curves, tmp_path / "roc.png")
    finally:
        mpl.close = orig
    fig = saved[0]
    scales = [ax.get_xscale() for ax in fig.axes]
    assert scales == ["linear", "log"]
    lo, hi = fig.axes[1].get_xlim()
    smallest = min(v for c in curves["roc"].values() for v in c["fpr"] if v > 0)
    assert lo <= smallest and hi == 1
    assert (tmp_path / "roc.png").stat().st_size > 1000
    orig(fig)


def test_d7_class_names_with_dollar_signs_do_not_crash_figures(tmp_path):
    """D7: a class named `$\\undefinedcmd{$` crashed eval's figures (matplotlib mathtext)."""
    classes = ["$\\undefinedcmd{$", "$x^2$", "cost $5", "plain"]
    rng = np.random.default_rng(0)
    targets = np.repeat(np.arange(4), 4)
    logits = rng.normal(size=(16, 4))
    paths = [str(tmp_path / f"img{i}.png") for i in range(16)]
    out = tmp_path / "eval"
    write_eval_outputs(out, logits, targets, paths, classes)
    for name in ("confusion_matrix.png", "roc_curves.png", "pr_curves.png", "mistakes.png"):
        assert (out / name).stat().st_size > 1000, name
    from fvt.evaluation.figures import class_distribution_figure, label

    class_distribution_figure({"train": {c: 3 for c in classes}}, classes, tmp_path / "dist.png")
    assert (tmp_path / "dist.png").is_file()
    from matplotlib.text import Text

    t = Text(text=label("$x^2$"))
    assert t._preprocess_math(t.get_text()) == ("$x^2$", False)  # shown literally, not as math


# -- a report of a real (tiny) run ----------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A run folder with config.yaml pointing at real images, split.json, metrics.csv, log.jsonl and
    an evaluation whose predictions have known mistakes."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from eval_fixtures import CLASSES, make_folder

    root = tmp_path_factory.mktemp("realrun")
    data = make_folder(root / "data", per_class=5)
    run = root / "run"
    run.mkdir()
    from fvt.config import Config

    cfg = Config()
    for k, v in {"data": str(data), "model": "faster_vit_nano", "img_size": [32], "mixup": 0.2,
                 "best_metric": "top1"}.items():
        cfg.set(k, v)
    cfg.save(run / "config.yaml")
    files = sorted((p, p.parent.name) for p in data.rglob("*.png"))
    val = [f for i, f in enumerate(files) if i % 5 == 0]
    train = [f for f in files if f not in val]
    (run / "split.json").write_text(json.dumps({"data": str(data), "classes": CLASSES,
                                                "train": [[str(p.relative_to(data)), c] for p, c in train],
                                                "val": [[str(p.relative_to(data)), c] for p, c in val]}))
    (run / "metrics.csv").write_text("epoch,train_loss,val_top1,epoch_time_s\n1,1.0,40.0,5\n2,0.8,66.7,5\n3,0.7,60.0,5\n")
    (run / "log.jsonl").write_text(json.dumps({"time": 100.0, "kind": "start", "device": "cpu", "precision": "bfloat16",
                                               "world_size": 1, "global_batch": 8}) + "\n"
                                   + json.dumps({"time": 175.0, "kind": "stop", "reason": "epochs"}) + "\n")
    (run / "best.pt").write_bytes(b"x")
    targets = np.array([CLASSES.index(c) for _, c in val])
    logits = 4.0 * np.eye(3)[targets]
    logits[0] = [0, 0, 9] if targets[0] != 2 else [9, 0, 0]       # a very confident mistake
    logits[1] = [0, 1.0, 0.5] if targets[1] == 0 else [1.0, 0, 0.5]  # a hesitant one
    write_eval_outputs(run / "eval", logits, targets, [str(p) for p, _ in val], CLASSES, {"checkpoint": "best.pt"})
    return run, data, val


def test_report_header_tables_gallery_and_data(real_run):
    run, data, val = real_run
    html = write_report(run).read_text()
    for fact in ("faster_vit_nano", str(data), "3: circle, square, stripes", "32x32", "best epoch",
                 "2 of 3 (val_top1 66.7%)", "1m 15s", "cpu, bfloat16"):
        assert html.replace("&#x27;", "'").count(fact) >= 1, fact
    # per-class table: weakest F1 first and highlighted
    m = json.loads((run / "eval" / "metrics.json").read_text())
    f1 = {c: m["per_class"][c]["f1-score"] for c in m["classes"]}
    weakest = min(f1, key=lambda c: (f1[c], c))
    assert re.search(r"<tr class=weak><td>" + weakest + "</td>", html)
    # gallery: most confident mistake first, with its file and its row in predictions.csv
    with open(run / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    wrong = [(n, r) for n, r in enumerate(rows, 1) if r[1] != r[2]]
    assert len(wrong) == 2
    first = re.search(r"<div class='gallery'><figure><img[^>]*><figcaption><a href=\"([^\"]+)\">([^<]+)</a>"
                      r".*?row (\d+) of", html)
    n, r = wrong[0]  # the confident one (row 1)
    assert first.group(2) == Path(r[0]).name and int(first.group(3)) == n and first.group(1) == Path(r[0]).as_uri()
    # data section: class distribution and augmented samples drawn from the config and the data
    assert (run / "class_distribution.png").is_file() and (run / "train_samples.png").is_file()
    with Image.open(run / "train_samples.png") as im:
        assert im.size[0] > 600
    for name in ("class_distribution.png", "train_samples.png"):
        assert base64.b64encode((run / name).read_bytes()).decode() in html
    # links point at files that exist
    hrefs = re.findall(r"<p class='links'>Files: (.*?)</p>", html)[0]
    targets = re.findall(r'href="([^"]+)"', hrefs)
    assert {"best.pt", "config.yaml", "metrics.csv", "eval/predictions.csv"} <= set(targets)
    assert all((run / t).is_file() for t in targets)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHECK_JS = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  document.title = 'IMAGES ' + imgs.length + ' BROKEN ' + bad.length + ' [' + bad.join('|') + ']';
});</script></body>"""


@pytest.mark.skipif(not _chromium(), reason="no chromium on PATH (apt-get install chromium)")
def test_report_renders_in_headless_chromium_with_every_figure(real_run, tmp_path):
    run, _, _ = real_run
    page = write_report(run).read_text()
    n_img = page.count("<img ")
    probe = run / "report_probe.html"  # the report plus a script that counts loaded images
    probe.write_text(page.replace("</body>", CHECK_JS, 1))
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", done.stdout)
    assert title, done.stderr[-2000:]
    assert title.group(1) == f"IMAGES {n_img} BROKEN 0 []"
    assert n_img >= 8  # 5 eval figures + curves-less run: distribution, samples, 2 thumbnails
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,2000", probe.as_uri()],
                   capture_output=True, timeout=120)
    with Image.open(shot) as im:  # the page painted something other than a blank sheet
        assert len(np.unique(np.asarray(im.convert("L").resize((60, 100))))) > 20


def test_report_and_figures_do_not_import_evaluate():
    """Issue 13 item 9: evaluate.py imports report.py, so report.py (and the figures it uses)
    must never import evaluate.py back; the figure list lives in figures.py."""
    import ast

    import fvt.evaluation.figures as figures_mod
    import fvt.evaluation.report as report_mod
    import fvt.evaluation.runinfo as runinfo_mod

    for mod in (report_mod, figures_mod, runinfo_mod):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(x.endswith("evaluate") for x in names), (mod.__name__, names)
    assert "reliability.png" in figures_mod.FIGURES


def test_f11_report_header_names_what_pretrained_loaded(tmp_path):
    """F11: the pretrained-load report (loaded / re-initialised / rebuilt / frozen) reaches the report header,
    not only the console; the wall time still sums start->stop pairs only."""
    import json

    from fvt.evaluation.runinfo import summary_facts

    events = [{"kind": "start", "time": 100.0, "device": "cpu", "precision": "float32", "world_size": 1,
               "global_batch": 8},
              {"kind": "pretrained", "time": 101.0, "path": "/c/w.pth.tar", "spec": "official", "loaded": 210,
               "reinitialised": ["head.weight", "head.bias"], "rebuilt": 6, "skipped": [], "frozen": 208},
              {"kind": "stop", "time": 160.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    facts = dict(summary_facts(tmp_path, {}))
    assert facts["pretrained"] == ("210 tensors from official; re-initialised head.weight, head.bias; "
                                   "6 position-bias buffers rebuilt for this size; 208 tensors frozen at the start")
    assert facts["wall time"] == "1m 00s"
