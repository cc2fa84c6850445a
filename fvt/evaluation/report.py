"""``report.html``: one self-contained page per run, readable offline.

Figures are embedded as base64 images, tables and texts are inlined; nothing is fetched. The
page shows a summary header (model, data, classes, image size, best epoch, wall time, device
and precision), links to the run's files, the latest evaluation when there is one (metrics,
per-class table with the weakest classes marked, confusion matrix, every eval figure and a
gallery of the most confident mistakes with their files and predictions.csv rows), the data
(class distribution, augmented training samples), the training curves and the config."""

from __future__ import annotations

import csv
import datetime
import json
import os
from pathlib import Path
from typing import List, Optional, Union

from .htmlparts import THUMB, esc as _esc, file_link as _file_link, img as _img, thumb as _thumb  # noqa: F401


PathLike = Union[str, Path]
MAX_TABLE_CLASSES = 40   # larger confusion matrices are shown as a figure only
MAX_BAD_FILES = 50
MAX_GALLERY = 24         # most confident mistakes shown as thumbnails
MAX_CLASS_ROWS = 200     # per-class table rows (weakest first)
LINKED = ["best.pt", "last.pt", "config.yaml", "metrics.csv", "log.jsonl", "split.json", "bad_files.txt",
          "curves.png", "eval/metrics.json", "eval/predictions.csv", "eval/classification_report.txt"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;text-align:center}.kpi{display:inline-block;margin:.3em 1.2em .3em 0}
.kpi b{font-size:1.4em;display:block}.muted{color:#777}
table.facts td{text-align:left}table.facts td:first-child{font-weight:600;background:#f7f7f7}
tr.weak td{background:#fde2e2}.gallery figure{width:180px}.gallery figure:has(img.cam){width:360px}
.gallery img{max-width:170px;margin-right:4px}.pair figure{max-width:48%}.gallery figcaption{text-align:left;word-break:break-all}
.links a{margin-right:1em;white-space:nowrap}
"""


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


def _per_class_table(m: dict) -> str:
    """Per-class precision / recall / F1 / support / AUC / AP, weakest F1 first, the weakest marked."""
    per, classes = m.get("per_class") or {}, m.get("classes") or []
    auc, ap = m.get("roc_auc_per_class") or {}, m.get("average_precision_per_class") or {}
    rows = [(c, per[c]) for c in classes if isinstance(per.get(c), dict)]
    if not rows:
        return ""
    rows.sort(key=lambda r: (r[1].get("f1-score", 0), r[0]))
    n_weak = min(3, max(1, len(rows) // 5)) if len(rows) > 1 else 0
    head = "".join(f"<th>{h}</th>" for h in ("class", "precision", "recall", "F1", "support", "ROC AUC", "AP"))
    body = []
    for i, (c, r) in enumerate(rows[:MAX_CLASS_ROWS]):
        cells = [r.get("precision"), r.get("recall"), r.get("f1-score"), int(r.get("support", 0)), auc.get(c), ap.get(c)]
        tds = "".join(f"<td>{'&ndash;' if v is None else _fmt(v)}</td>" for v in cells)
        body.append(f"<tr{' class=weak' if i < n_weak else ''}><td>{_esc(c)}</td>{tds}</tr>")
    more = f"<p class='muted'>{len(rows) - MAX_CLASS_ROWS} stronger classes not listed.</p>" \
        if len(rows) > MAX_CLASS_ROWS else ""
    note = (f"<p class='muted'>Sorted by F1, weakest first; the {n_weak} weakest highlighted.</p>" if n_weak else "")
    return f"<h3>Per-class metrics</h3>{note}<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _gallery(eval_dir: Path, out: Path) -> str:
    """The most confident mistakes from predictions.csv: thumbnail, file, true / predicted, and
    the row of predictions.csv (1 = first data row) that holds all class probabilities."""
    pred_csv = eval_dir / "predictions.csv"
    if not pred_csv.is_file():
        return ""
    with open(pred_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        wrong = []
        for n, r in enumerate(reader, start=1):
            if len(r) == len(header) and r[1] != r[2] and r[2] in header[3:]:
                try:
                    wrong.append((float(r[3 + header[3:].index(r[2])]), n, r[0], r[1], r[2]))
                except ValueError:
                    continue
    link = f'<a href="{_esc(_rel(pred_csv, out))}">predictions.csv</a>'
    if not wrong:
        return f"<h3>Most confident mistakes</h3><p>No mistakes in {link}.</p>"
    wrong.sort(key=lambda w: (-w[0], w[1]))
    from .trust_report import heatmap_tags

    heat = heatmap_tags(eval_dir)  # Grad-CAM overlay of the predicted class, beside each image
    cards = []
    for prob, n, path, true, pred in wrong[:MAX_GALLERY]:
        src = _thumb(path)
        pic = f'<img alt="{_esc(Path(path).name)}" src="{src}">' if src else "<p class='muted'>(file unreadable)</p>"
        cards.append(f"<figure>{pic}{heat.get(path, '')}<figcaption>{_file_link(path, Path(path).name)}<br>true: <b>{_esc(true)}</b>"
                     f"<br>predicted: <b>{_esc(pred)}</b> ({prob:.2f})<br>row {n} of {link}</figcaption></figure>")
    return (f"<h3>Most confident mistakes ({min(len(wrong), MAX_GALLERY)} of {len(wrong)})</h3>"
            f"<p class='muted'>Click a file name to open it; the row number points into {link}.</p>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def _eval_section(eval_dir: Path, m: dict, out: Path) -> str:
    from .figures import FIGURES  # matplotlib is imported only when a report is written

    parts = ["<h2>Evaluation</h2>"]
    if m:
        src = ", ".join(f"{k}: {m[k]}" for k in ("checkpoint", "weights", "epoch", "data", "num_samples") if k in m)
        parts.append(f"<p class='muted'>{_esc(src)}</p>")
        kp = "".join(f"<span class='kpi'><b>{m[k]:.2f}{unit}</b>{_esc(label)}</span>" if unit else
                     f"<span class='kpi'><b>{m[k]:.4f}</b>{_esc(label)}</span>"
                     for k, label, unit in KPIS if isinstance(m.get(k), (int, float)))
        parts.append(f"<div>{kp}</div>")
        parts.append(_per_class_table(m))
    rep = eval_dir / "classification_report.txt"
    if rep.is_file():
        parts.append(f"<details><summary>scikit-learn classification report</summary><pre>{_esc(rep.read_text())}</pre></details>")
    classes, cm = m.get("classes"), m.get("confusion_matrix")
    if classes and cm and len(classes) <= MAX_TABLE_CLASSES:
        rows = [[f"true: {c}", *r] for c, r in zip(classes, cm)]
        parts.append("<h3>Confusion matrix (rows: true, columns: predicted)</h3>" + _table(["", *classes], rows))
    pngs = [eval_dir / n for n in FIGURES if (eval_dir / n).is_file() and n != "mistakes.png"]
    pngs += sorted(p for p in eval_dir.glob("*.png") if p.name not in FIGURES)
    for p in pngs:
        parts.append(f"<h3>{_esc(FIGURES.get(p.name, p.stem))}</h3>" + _img(p, FIGURES.get(p.name, p.stem)))
    parts.append(_gallery(eval_dir, out))
    return "\n".join(parts)


def _data_section(run_dir: Path) -> str:
    from .figures import RUN_FIGURES
    from .runinfo import make_run_figures

    notes = make_run_figures(run_dir)
    parts = [f"<h3>{_esc(title)}</h3>" + _img(run_dir / n, title)
             for n, title in RUN_FIGURES.items() if (run_dir / n).is_file()]
    parts += [f"<p class='muted'>{_esc(n)}</p>" for n in notes]
    return "<h2>Data</h2>" + "\n".join(parts) if parts else ""


def _training_section(run_dir: Path) -> str:
    from .figures import RUN_FIGURES

    parts = ["<h2>Training</h2>"]
    if (run_dir / "curves.png").is_file():
        parts.append(_img(run_dir / "curves.png", "Training curves: loss, accuracy, learning rate"))
    if (run_dir / "metrics.csv").is_file():
        parts.append("<h3>Per-epoch metrics (metrics.csv)</h3>" + _csv_table(run_dir / "metrics.csv"))
    others = sorted(p for p in run_dir.glob("*.png") if p.name != "curves.png" and p.name not in RUN_FIGURES)
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


def _rel(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target.resolve(), out.parent.resolve())).as_posix()


def _links(run_dir: Path, eval_dir: Optional[Path], out: Path) -> str:
    files = [run_dir / n for n in LINKED if not n.startswith("eval/")]
    if eval_dir is not None:
        files += [eval_dir / n.split("/", 1)[1] for n in LINKED if n.startswith("eval/")]
    links = [f'<a href="{_esc(_rel(p, out))}">{_esc(_rel(p, run_dir / "x"))}</a>' for p in files if p.is_file()]
    return f"<p class='links'>Files: {''.join(links)}</p>" if links else ""


def _header(run_dir: Path, eval_dir: Optional[Path], m: dict, out: Path) -> str:
    from .runinfo import summary_facts

    facts = summary_facts(run_dir, m)
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in facts)
    return (f"<table class='facts'>{rows}</table>" if rows else "") + _links(run_dir, eval_dir, out)


def write_report(run_dir: PathLike, eval_dir: Optional[PathLike] = None, out: Optional[PathLike] = None) -> Path:
    """Write ``out`` (default RUN/report.html) from RUN's files and ``eval_dir`` (default RUN/eval,
    when it holds a metrics.json). Returns the path written."""
    from .. import __version__

    run_dir = Path(run_dir)
    if eval_dir is None and (run_dir / "eval" / "metrics.json").is_file():
        eval_dir = run_dir / "eval"
    out = Path(out) if out is not None else run_dir / "report.html"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    eval_dir = Path(eval_dir) if eval_dir is not None and Path(eval_dir).is_dir() else None
    metrics_json = eval_dir / "metrics.json" if eval_dir is not None else None
    m = json.loads(metrics_json.read_text()) if metrics_json is not None and metrics_json.is_file() else {}
    body = [f"<h1>fvt report: {_esc(run_dir.resolve().name)}</h1>",
            f"<p class='muted'>{_esc(run_dir.resolve())} &middot; generated {when} by fvt {_esc(__version__)}</p>",
            _header(run_dir, eval_dir, m, out)]
    if eval_dir is not None:
        body.append(_eval_section(eval_dir, m, out))
    from .trust_report import trust_section

    body.append(trust_section(run_dir, eval_dir))
    body.append(_data_section(run_dir))
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
