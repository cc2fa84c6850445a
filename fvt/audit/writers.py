"""audit.csv, relabel.csv (a template for ``fvt train --relabel``) and audit.json.

audit.csv: one row per finding, ``path, issue, given_label, suggested_label, score, split, other,
detail``; sorted by issue kind, then score (most likely first). ``path`` is relative to the data
root (what ``--relabel`` expects); ``other`` is the matching image of a duplicate pair.

relabel.csv: every image with a finding, once, with ``new_label`` empty (= keep). Write a class
name or ``drop`` into ``new_label`` for the rows you agree with (``suggested_label`` holds the
audit's proposal) and train with ``fvt train --relabel relabel.csv``. A relabel.csv that was
edited since the audit wrote it is never overwritten: the new template goes to relabel.new.csv.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional

from .run import ISSUE_KINDS, AuditResult

CSV_COLUMNS = ["path", "issue", "given_label", "suggested_label", "score", "split", "other", "detail"]
RELABEL_COLUMNS = ["path", "new_label", "issue", "given_label", "suggested_label", "score"]


def ordered(result: AuditResult) -> list:
    return [i for kind in ISSUE_KINDS for i in result.by_kind(kind)]


def write_audit_csv(result: AuditResult, path: Path) -> Path:
    d = result.data
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for i in ordered(result):
            w.writerow([d.names[i.index], i.issue, d.classes[d.labels[i.index]], i.suggested, f"{i.score:.6f}",
                        d.splits[i.index], d.names[i.other] if i.other is not None else "", i.detail])
    return path


def file_sha256(path: Path) -> Optional[str]:
    """The file's SHA-256, or None when it cannot be read (a relabel.csv the user removed)."""
    from ..hashing import file_sha256 as digest

    try:
        return digest(path)
    except OSError:
        return None


def write_relabel_template(result: AuditResult, folder: Path, previous: Optional[str]) -> Path:
    """relabel.csv (or relabel.new.csv when relabel.csv was edited since ``previous``, its recorded digest)."""
    d = result.data
    target = folder / "relabel.csv"
    if target.is_file() and file_sha256(target) != previous:
        target = folder / "relabel.new.csv"
    seen = set()
    with open(target, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(RELABEL_COLUMNS)
        for i in ordered(result):
            if i.index in seen:
                continue
            seen.add(i.index)
            w.writerow([d.names[i.index], "", i.issue, d.classes[d.labels[i.index]], i.suggested, f"{i.score:.6f}"])
    return target


def summary(result: AuditResult, files: dict) -> dict:
    d = result.data
    counts = {k: len({i.index for i in result.issues if i.issue == k}) for k in ISSUE_KINDS}
    return {"data": str(d.root), "layout": d.layout, "images": len(d), "classes": d.classes,
            "split_sizes": {s: d.splits.count(s) for s in ("train", "val", "test") if s in d.splits},
            "model": result.model, "images_with_issue": counts,
            "pairs": len(result.pairs), "imbalance": _plain(result.imbalance), "thresholds": result.thresholds,
            "timings_s": {k: round(v, 2) for k, v in result.timings.items()}, "files": files}


def write_summary(result: AuditResult, folder: Path, files: dict) -> Path:
    path = folder / "audit.json"
    path.write_text(json.dumps(summary(result, files), indent=1))
    return path


def read_previous_relabel_digest(folder: Path) -> Optional[str]:
    try:
        return json.loads((folder / "audit.json").read_text())["files"].get("relabel_sha256")
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
