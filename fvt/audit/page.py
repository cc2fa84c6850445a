"""audit.html: the findings as a self-contained page (thumbnails inlined, links to the files).

Sections: summary (data, model, images per class and split with the imbalance ratio, counts of
findings, time), then one section per kind of finding, most likely first: label issues (given
and suggested label), duplicate pairs side by side (conflicting labels, split leaks, near
duplicates), outliers. Each section shows at most MAX_SHOWN findings; audit.csv has them all."""

from __future__ import annotations

import datetime
from pathlib import Path

from ..evaluation.htmlparts import esc, file_link, thumb
from .run import AuditResult

MAX_SHOWN = 120
TITLES = {
    "label_issue": ("Likely label errors", "Out-of-fold probabilities disagree with the given label (cleanlab)."),
    "conflicting_labels": ("Duplicates with different labels", "The same photo (resized, re-compressed or cropped) "
                           "filed under two classes: at least one label is wrong."),
    "split_leak": ("Duplicates across train / val / test", "The same photo on both sides of the split: validation "
                   "accuracy is optimistic. The audit suggests dropping the training copy."),
    "near_duplicate": ("Near-duplicates within a split", "Copies that weigh a photo twice."),
    "outlier": ("Outliers", "Far from every other image: a foreign photo, a screenshot, a broken crop?"),
}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.muted{color:#777}.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;padding:6px;width:180px;font-size:.8em;word-break:break-all}
.card.pair{width:360px}.card img{max-width:170px;max-height:170px;min-height:80px;margin-right:4px}.bad{background:#fde2e2}
"""


def _picture(result: AuditResult, i: int) -> str:
    d = result.data
    src = thumb(d.files[i]) if d.files[i] else _thumb_from_bytes(d.dataset, i)
    return f'<img alt="{esc(d.names[i])}" src="{src}">' if src else "<span class='muted'>(unreadable)</span>"


def _thumb_from_bytes(dataset, i: int):
    try:
        return thumb(dataset.load(i))
    except Exception:
        return None


def _name(result: AuditResult, i: int) -> str:
    d = result.data
    return file_link(d.files[i], d.names[i]) if d.files[i] else esc(d.names[i])


def _card(result: AuditResult, issue) -> str:
    d = result.data
    i, given = issue.index, d.classes[d.labels[issue.index]]
    pics = _picture(result, i) + (_picture(result, issue.other) if issue.other is not None else "")
    lines = [f"{_name(result, i)} ({esc(d.splits[i])})", f"given: <b>{esc(given)}</b>"]
    if issue.other is not None:
        o = issue.other
        lines.append(f"= {_name(result, o)} ({esc(d.splits[o])}, <b>{esc(d.classes[d.labels[o]])}</b>)")
    if issue.suggested:
        lines.append(f"suggested: <b>{esc(issue.suggested)}</b>")
    lines.append(f"score {issue.score:.3f}; {esc(issue.detail)}")
    return f"<div class='card{' pair' if issue.other is not None else ''}'>{pics}<br>{'<br>'.join(lines)}</div>"


def _section(result: AuditResult, kind: str) -> str:
    title, what = TITLES[kind]
    items = result.by_kind(kind)
    if kind != "label_issue" and kind != "outlier":  # a pair gives two rows: show it once
        items = [i for i in items if i.other is None or i.index < i.other]
    more = f" Showing {MAX_SHOWN} of {len(items)}; audit.csv lists all." if len(items) > MAX_SHOWN else ""
    cards = "".join(_card(result, i) for i in items[:MAX_SHOWN])
    return (f"<h2>{esc(title)} ({len(items)})</h2><p class='muted'>{esc(what)} Most likely first.{more}</p>"
            f"<div class='cards'>{cards or '<p>None found.</p>'}</div>")


def _imbalance_table(result: AuditResult) -> str:
    imb = result.imbalance
    if not imb:
        return ""
    splits = list(imb)
    rows = "".join(f"<tr><td>{esc(c)}</td>" + "".join(f"<td>{imb[s]['counts'].get(c, 0)}</td>" for s in splits)
                   + "</tr>" for c in result.data.classes)
    ratio = "".join(f"<td{' class=bad' if imb[s]['imbalanced'] else ''}>{imb[s]['ratio']:.2f}x</td>" for s in splits)
    head = "".join(f"<th>{esc(s)}</th>" for s in splits)
    return (f"<h2>Class balance</h2><table><tr><th>class</th>{head}</tr>{rows}<tr><td><b>largest / smallest</b></td>"
            f"{ratio}</tr></table><p class='muted'>Above 5x, consider fvt train --class-weights balanced, "
            "--sampler balanced and --best-metric balanced_accuracy.</p>")


def write_page(result: AuditResult, path: Path, files: dict) -> Path:
    from .. import __version__
    from .writers import summary

    s = summary(result, files)
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    sizes = ", ".join(f"{k} {v}" for k, v in s["split_sizes"].items())
    facts = [("data", f"{s['data']} ({s['layout']})"), ("images", f"{s['images']} ({sizes})"),
             ("classes", f"{len(s['classes'])}: {', '.join(s['classes'])}"), ("model (embeddings)", s["model"]),
             ("findings (images)", ", ".join(f"{k} {v}" for k, v in s["images_with_issue"].items())),
             ("thresholds", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in s["thresholds"].items())),
             ("time", f"{s['timings_s'].get('total_s', 0):.1f} s")]
    rows = "".join(f"<tr><td>{esc(k)}</td><td style='text-align:left'>{esc(v)}</td></tr>" for k, v in facts)
    links = " ".join(f'<a href="{esc(Path(v).name)}">{esc(Path(v).name)}</a>' for k, v in files.items()
                     if k.endswith("csv") and v)
    body = [f"<h1>fvt data audit: {esc(Path(s['data']).name)}</h1>",
            f"<p class='muted'>generated {when} by fvt {esc(__version__)} &middot; {links}</p>",
            f"<table>{rows}</table>", _imbalance_table(result)]
    body += [_section(result, k) for k in TITLES]
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fvt data audit</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
