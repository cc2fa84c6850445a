"""The "Trust" section of report.html, and the heat maps of its mistakes gallery.

Reads what training and evaluation wrote: ``RUN/trust/`` (temperature and abstention threshold
fitted on the validation split at the end of training), ``EVAL/trust/`` (the same measured on the
evaluated data, plus ``fvt eval --ood``), ``EVAL/explain/`` (Grad-CAM overlays) and
``RUN/relabel.csv`` (labels changed with ``--relabel``). Every image is inlined."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Optional

from .htmlparts import esc, file_link, img, thumb

TRUST_DIR = "trust"
EXPLAIN_DIR = "explain"


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(v, fmt: str = ".4f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "&ndash;"


def heatmap_index(eval_dir: Optional[Path]) -> List[dict]:
    doc = _read(eval_dir / EXPLAIN_DIR / "index.json") if eval_dir is not None else None
    return list((doc or {}).get("images") or [])


def heatmap_tags(eval_dir: Optional[Path], kind: str = "mistake") -> Dict[str, str]:
    """{image path: <img> of its Grad-CAM overlay} for the gallery cards of ``kind``."""
    out = {}
    for e in heatmap_index(eval_dir):
        if e.get("kind") == kind:
            src = thumb(eval_dir / EXPLAIN_DIR / e["file"])
            if src:
                out[e["path"]] = (f'<img class="cam" alt="heat map: {esc(e["pred"])}" src="{src}" '
                                  f'title="Grad-CAM of {esc(e["pred"])}">')
    return out


def _calibration_rows(found: List[tuple]) -> str:
    rows = []
    for where, s in found:
        c = s["calibration"]
        rows.append(f"<tr><td>{esc(s.get('where', where))}</td><td>{c.get('num_samples', '')}</td>"
                    f"<td>{_num(c['temperature'], '.3f')}</td><td>{_num(c['ece_before'])}</td>"
                    f"<td>{_num(c['ece_after'])}</td><td>{_num(c['nll_before'])}</td><td>{_num(c['nll_after'])}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("measured on", "images", "temperature", "ECE before", "ECE after",
                                              "NLL before", "NLL after"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _abstention(s: dict) -> str:
    sel = s["selective"]
    text = (f"At precision {sel['target_precision']:g} the model can answer "
            f"<b>{100 * sel['coverage_at_target']:.1f}%</b> of these photos "
            f"(threshold {_num(sel['threshold_at_target'], '.3f')}; below it the answer is <i>unknown</i>).")
    if "threshold" in sel:
        text += (f" The stored threshold {_num(sel['threshold'], '.3f')} (fvt predict --reject auto) answers "
                 f"{100 * sel['coverage']:.1f}% here, at precision {_num(sel.get('precision'), '.3f')}.")
    return f"<p>{text}</p>"


def _ood(s: dict, folder: Path) -> str:
    o = s.get("ood")
    if not o:
        return ""
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{_num(m['auroc'])}</td><td>{_num(m['fpr_at_95_tpr'])}</td></tr>"
                   for k, m in o["scores"].items())
    fig = img(folder / "ood_scores.png", "OOD scores") if (folder / "ood_scores.png").is_file() else ""
    return (f"<h3>Foreign images (fvt eval --ood)</h3><p class='muted'>{o['num_in']} evaluation images vs "
            f"{o['num_out']} images of {esc(o['source'])}</p><table><tr><th>score</th><th>AUROC</th>"
            f"<th>FPR at 95% TPR</th></tr>{rows}</table>{fig}")


def _relabel(run_dir: Path) -> str:
    f = run_dir / "relabel.csv"
    if not f.is_file():
        return ""
    try:
        with open(f, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return ""
    labels = [(r.get("new_label") or "").strip().lower() for r in rows]
    dropped, changed = labels.count("drop"), sum(1 for v in labels if v and v != "drop")
    return (f"<h3>Labels changed for this run (--relabel)</h3><p>{changed} images relabelled and {dropped} left out "
            f"by {file_link(str(f.resolve()), 'relabel.csv')}; the image folder itself was not touched.</p>")


def _examples(eval_dir: Optional[Path]) -> str:
    cards = []
    for e in heatmap_index(eval_dir):
        if e.get("kind") != "correct":
            continue
        pic, cam = thumb(e["path"]), thumb(eval_dir / EXPLAIN_DIR / e["file"])
        if not cam:
            continue
        first = f'<img alt="{esc(Path(e["path"]).name)}" src="{pic}">' if pic else ""
        cards.append(f"<figure>{first}<img class='cam' alt='heat map: {esc(e['pred'])}' src='{cam}'>"
                     f"<figcaption>{file_link(e['path'], Path(e['path']).name)}<br><b>{esc(e['pred'])}</b> "
                     f"({e['prob']:.2f})</figcaption></figure>")
    if not cards:
        return ""
    return ("<h3>Why it decided: Grad-CAM of correct predictions (two per class)</h3><p class='muted'>Warm colours: "
            "where the evidence for the predicted class lies (FasterViT's final feature map, one cell per 32 px).</p>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def trust_section(run_dir: Path, eval_dir: Optional[Path]) -> str:
    """The section, or '' when neither training nor evaluation wrote trust outputs."""
    found = []
    for where, folder in (("validation split, end of training", run_dir / TRUST_DIR),
                          ("evaluation data", eval_dir / TRUST_DIR if eval_dir is not None else None)):
        s = _read(folder / "trust.json") if folder is not None else None
        if s and "calibration" in s:
            found.append((where, s, folder))
    parts = []
    if found:
        where, last, folder = found[-1]
        parts.append("<h3>Calibration: temperature scaling</h3>"
                     "<p class='muted'>Probabilities are softmax(logits / T); ECE: expected calibration error "
                     "(15 bins), lower is better. Accuracy does not change.</p>")
        parts.append(_calibration_rows([(w, s) for w, s, _ in found]))
        pair = [img(folder / name, f"{title}, {last.get('where', where)}")
                for name, title in (("reliability_before.png", "Reliability before (T = 1)"),
                                    ("reliability_after.png",
                                     f"Reliability after (T = {last['calibration']['temperature']:.3f})"))
                if (folder / name).is_file()]
        parts.append(f"<div class='pair'>{''.join(pair)}</div>")
        parts.append("<h3>Abstention: coverage vs accuracy</h3>" + _abstention(last))
        if (folder / "coverage.png").is_file():
            parts.append(img(folder / "coverage.png", "Accuracy of the answered photos vs the fraction answered"))
        parts.append(_ood(last, folder))
    parts.append(_relabel(run_dir))
    parts.append(_examples(eval_dir))
    body = "\n".join(p for p in parts if p)
    return f"<h2>Trust</h2>\n{body}" if body else ""
