"""``report.html``: one self-contained page per run, readable offline.

Figures are embedded as base64 PNGs, tables and texts are inlined; nothing is fetched. The
page shows the run's config (RUN/config.yaml), its training curves (RUN/curves.png,
RUN/metrics.csv) and, when there is one, the latest evaluation (metrics, classification
report, confusion matrix and every eval figure)."""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
from pathlib import Path
from typing import List, Optional, Union

PathLike = Union[str, Path]
MAX_TABLE_CLASSES = 40   # larger confusion matrices are shown as a figure only
MAX_BAD_FILES = 50

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;text-align:center}.kpi{display:inline-block;margin:.3em 1.2em .3em 0}
.kpi b{font-size:1.4em;display:block}.muted{color:#777}
"""


def _esc(x) -> str:
    return html.escape(str(x))


def _img(path: Path, title: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_esc(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(title)}</figcaption></figure>")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return _esc(v)


def _table(header: List[str], rows: List[list]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _csv_table(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "<p class='muted'>metrics.csv is empty.</p>"

    def num(c):
        try:
            return float(c)
        except ValueError:
            return c

    return _table(rows[0], [[num(c) for c in r] for r in rows[1:]])


KPIS = [("top1", "top-1 accuracy", "%"), ("top5", "top-5 accuracy", "%"), ("balanced_accuracy", "balanced accuracy", "%"),
        ("loss", "loss", ""), ("roc_auc_macro", "ROC AUC (macro)", ""), ("roc_auc_micro", "ROC AUC (micro)", ""),
        ("average_precision_macro", "AP (macro)", ""), ("ece", "ECE", "")]


def _eval_section(eval_dir: Path) -> str:
    from .evaluate import FIGURES

    parts = ["<h2>Evaluation</h2>"]
    m = json.loads((eval_dir / "metrics.json").read_text()) if (eval_dir / "metrics.json").is_file() else {}
    if m:
        src = ", ".join(f"{k}: {m[k]}" for k in ("checkpoint", "weights", "epoch", "data", "num_samples") if k in m)
        parts.append(f"<p class='muted'>{_esc(src)}</p>")
        kp = "".join(f"<span class='kpi'><b>{m[k]:.2f}{unit}</b>{_esc(label)}</span>" if unit else
                     f"<span class='kpi'><b>{m[k]:.4f}</b>{_esc(label)}</span>"
                     for k, label, unit in KPIS if isinstance(m.get(k), (int, float)))
        parts.append(f"<div>{kp}</div>")
    rep = eval_dir / "classification_report.txt"
    if rep.is_file():
        parts.append(f"<h3>Classification report</h3><pre>{_esc(rep.read_text())}</pre>")
    classes, cm = m.get("classes"), m.get("confusion_matrix")
    if classes and cm and len(classes) <= MAX_TABLE_CLASSES:
        rows = [[f"true: {c}", *r] for c, r in zip(classes, cm)]
        parts.append("<h3>Confusion matrix (rows: true, columns: predicted)</h3>" + _table(["", *classes], rows))
    pngs = [eval_dir / n for n in FIGURES if (eval_dir / n).is_file()]
    pngs += sorted(p for p in eval_dir.glob("*.png") if p.name not in FIGURES)
    for p in pngs:
        parts.append(f"<h3>{_esc(FIGURES.get(p.name, p.stem))}</h3>" + _img(p, FIGURES.get(p.name, p.stem)))
    return "\n".join(parts)


def _training_section(run_dir: Path) -> str:
    parts = ["<h2>Training</h2>"]
    if (run_dir / "curves.png").is_file():
        parts.append(_img(run_dir / "curves.png", "Training curves: loss, accuracy, learning rate"))
    if (run_dir / "metrics.csv").is_file():
        parts.append("<h3>Per-epoch metrics (metrics.csv)</h3>" + _csv_table(run_dir / "metrics.csv"))
    others = sorted(p for p in run_dir.glob("*.png") if p.name != "curves.png")
    for p in others:
        parts.append(_img(p, p.stem.replace("_", " ")))
    bad = run_dir / "bad_files.txt"
    if bad.is_file():
        lines = [ln for ln in bad.read_text(errors="replace").splitlines() if ln.strip()]
        more = f"\n... and {len(lines) - MAX_BAD_FILES} more" if len(lines) > MAX_BAD_FILES else ""
        parts.append(f"<h3>Bad files left out ({len(lines)})</h3><pre>{_esc(chr(10).join(lines[:MAX_BAD_FILES]) + more)}</pre>")
    if len(parts) == 1:
        parts.append("<p class='muted'>No training curves in this folder.</p>")
    return "\n".join(parts)


def write_report(run_dir: PathLike, eval_dir: Optional[PathLike] = None, out: Optional[PathLike] = None) -> Path:
    """Write ``out`` (default RUN/report.html) from RUN's files and ``eval_dir`` (default RUN/eval,
    when it holds a metrics.json). Returns the path written."""
    from .. import __version__

    run_dir = Path(run_dir)
    if eval_dir is None and (run_dir / "eval" / "metrics.json").is_file():
        eval_dir = run_dir / "eval"
    out = Path(out) if out is not None else run_dir / "report.html"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>fvt report: {_esc(run_dir.resolve().name)}</h1>",
            f"<p class='muted'>{_esc(run_dir.resolve())} &middot; generated {when} by fvt {_esc(__version__)}</p>"]
    if eval_dir is not None and Path(eval_dir).is_dir():
        body.append(_eval_section(Path(eval_dir)))
    body.append(_training_section(run_dir))
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        body.append(f"<h2>Configuration (config.yaml)</h2><pre>{_esc(cfg.read_text())}</pre>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>fvt report: {_esc(run_dir.resolve().name)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees a half-written page
    return out
