"""The report.html section of a multi-label evaluation: headline scores, the per-label table (AP, F1,
precision, recall, support, threshold; weakest AP first), the figures of ``multilabel_outputs`` and a
gallery of the most confident mistakes with their true and predicted label sets."""

from __future__ import annotations

import csv
from pathlib import Path

from .htmlparts import esc, file_link, fmt, img, rel, thumb

MAX_GALLERY = 24
MAX_ROWS = 200
KPIS = [("map_macro", "mAP (macro)"), ("map_micro", "mAP (micro)"), ("f1_macro", "F1 (macro)"),
        ("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"), ("loss", "loss (BCE)")]


def _label_table(m: dict) -> str:
    per = m.get("per_class") or {}
    rows = sorted(per.items(), key=lambda kv: (kv[1].get("ap") is not None, kv[1].get("ap") or 0.0, kv[0]))
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("label", "AP", "F1", "precision", "recall", "support", "threshold"))
    body = []
    for c, r in rows[:MAX_ROWS]:
        cells = [r.get("ap"), r.get("f1-score"), r.get("precision"), r.get("recall"), r.get("support"), r.get("threshold")]
        body.append(f"<tr><td>{esc(c)}</td>" + "".join(f"<td>{'&ndash;' if v is None else fmt(v)}</td>" for v in cells)
                    + "</tr>")
    note = ("<p class='muted'>Weakest AP first; a label is predicted when its probability reaches its threshold "
            "(tuned for F1 on the validation split, stored with the model). AP &ndash;: no positive image here.</p>")
    return f"<h3>Per-label metrics</h3>{note}<table><tr>{head}</tr>{''.join(body)}</table>"


def _gallery(eval_dir: Path, out: Path) -> str:
    """Wrong label sets from predictions.csv, most confident first (the largest probability of a wrong decision)."""
    pred_csv = eval_dir / "predictions.csv"
    if not pred_csv.is_file():
        return ""
    with open(pred_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        names, wrong = header[3:], []
        for n, r in enumerate(reader, start=1):
            if len(r) != len(header) or r[1] == r[2]:
                continue
            true, pred = set(filter(None, r[1].split(";"))), set(filter(None, r[2].split(";")))
            try:
                probs = dict(zip(names, map(float, r[3:])))
            except ValueError:
                continue
            conf = max([probs.get(c, 0.0) for c in pred - true] + [1 - probs.get(c, 1.0) for c in true - pred])
            wrong.append((conf, n, r[0], r[1], r[2]))
    link = f'<a href="{esc(rel(pred_csv, out))}">predictions.csv</a>'
    if not wrong:
        return f"<h3>Most confident mistakes</h3><p>Every label set in {link} is right.</p>"
    wrong.sort(key=lambda w: (-w[0], w[1]))
    cards = []
    for conf, n, path, true, pred in wrong[:MAX_GALLERY]:
        src = thumb(path)
        pic = f'<img alt="{esc(Path(path).name)}" src="{src}">' if src else "<p class='muted'>(file unreadable)</p>"
        cards.append(f"<figure>{pic}<figcaption>{file_link(path, Path(path).name)}<br>true: <b>{esc(true or '(none)')}</b>"
                     f"<br>predicted: <b>{esc(pred or '(none)')}</b><br>most confident wrong decision {conf:.2f}"
                     f"<br>row {n} of {link}</figcaption></figure>")
    return (f"<h3>Most confident mistakes ({min(len(wrong), MAX_GALLERY)} of {len(wrong)} wrong label sets)</h3>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def multilabel_section(eval_dir: Path, m: dict, out: Path, title: str = "Evaluation") -> str:
    from .multilabel_outputs import ML_FIGURES

    parts = [f"<h2>{esc(title)} (multi-label)</h2>"]
    src = ", ".join(f"{k}: {m[k]}" for k in ("checkpoint", "weights", "epoch", "data", "num_samples", "tta") if k in m)
    parts.append(f"<p class='muted'>{esc(src)}</p>")
    kp = "".join(f"<span class='kpi'><b>{m[k]:.4f}</b>{esc(label)}</span>" for k, label in KPIS
                 if isinstance(m.get(k), (int, float)))
    parts.append(f"<div>{kp}</div>")
    parts.append(_label_table(m))
    rep = eval_dir / "classification_report.txt"
    if rep.is_file():
        parts.append(f"<details><summary>scikit-learn classification report</summary><pre>{esc(rep.read_text())}</pre></details>")
    for name, caption in ML_FIGURES.items():
        if name != "mistakes.png" and (eval_dir / name).is_file():
            parts.append(f"<h3>{esc(caption)}</h3>" + img(eval_dir / name, caption))
    parts.append(_gallery(eval_dir, out))
    return "\n".join(parts)
