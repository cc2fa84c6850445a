"""``--relabel FILE``: change or drop labels for training without touching the image folder.

The file is a CSV with a header naming at least ``path`` and ``new_label`` (the ``relabel.csv``
that ``fvt data audit`` writes, with more columns for context, is one) or plain
``path,new_label`` rows. ``new_label`` is a class name of the data, ``drop`` (leave the image
out), or empty (keep it as it is). A relative path is relative to the data root (the folder
``--data`` names, or the CSV's folder), as ``fvt data audit`` writes them; absolute paths work
too. An unknown path or label, or one image listed twice, is a one-line error before any
training.

The change applies to every split (train, val, test) of folder and CSV data; the file the run
used is copied to ``RUN/relabel.csv`` and later reads of the run (``fvt eval`` on its validation
split) use that copy.
"""

from __future__ import annotations

import csv
import filecmp
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DataError, UsageError, choice_message

RELABEL_NAME = "relabel.csv"
DROP = "drop"
Row = Tuple[int, str, Optional[str]]  # (line, path as written, new label or None = drop)


def read_relabel(path: Path) -> List[Row]:
    """The rows that change something (empty ``new_label`` rows are skipped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"--relabel {path}: cannot read it ({e})") from None
    if not rows:
        raise DataError(f"--relabel {path} is empty; expected rows of path,new_label")
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header:
        if "new_label" not in header:
            raise DataError(f"--relabel {path}: the header names no 'new_label' column (columns: {', '.join(header)})")
        ip, il, body, first = header.index("path"), header.index("new_label"), rows[1:], 2
    else:
        ip, il, body, first = 0, 1, rows, 1
    out: List[Row] = []
    for n, row in enumerate(body, start=first):
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) <= max(ip, il):
            raise DataError(f"--relabel {path}:{n}: expected path,new_label, got {','.join(row)!r}")
        where, label = row[ip].strip(), row[il].strip()
        if not where:
            raise DataError(f"--relabel {path}:{n}: empty path")
        if label:
            out.append((n, where, None if label.lower() == DROP else label))
    return out


def _key(p) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(p)))


def _resolve(where: str, root: Path, known: Dict[str, tuple]) -> Optional[str]:
    p = Path(where).expanduser()
    for cand in ([p] if p.is_absolute() else [root / p, p]):
        if _key(cand) in known:
            return _key(cand)
    return None


def plan_relabel(rows: List[Row], bundle, source: Path) -> Dict[str, Optional[int]]:
    """{file key: new class index or None (drop)}; every path and label checked."""
    known = {}
    for split in ("train", "val", "test"):
        ds = getattr(bundle, split)
        for i, (p, _) in enumerate(getattr(ds, "samples", []) if ds is not None else []):
            known[_key(p)] = (split, i)
    idx = bundle.class_to_idx
    plan: Dict[str, Optional[int]] = {}
    seen: Dict[str, int] = {}
    for n, where, label in rows:
        key = _resolve(where, bundle.root, known)
        if key is None:
            raise DataError(f"--relabel {source}:{n}: {where} is not a usable image of the data in {bundle.root} "
                            f"(relative paths are relative to that folder)")
        if label is not None and label not in idx:
            raise DataError(f"--relabel {source}:{n}: " + choice_message("new label", label, [*bundle.classes, DROP]))
        if key in seen:
            raise DataError(f"--relabel {source}:{n}: {where} is listed again (first on line {seen[key]})")
        seen[key] = n
        plan[key] = None if label is None else idx[label]
    return plan


def apply_relabel(bundle, spec: str, run_dir: Optional[Path], write: bool) -> None:
    """Relabel / drop the listed images in every split of ``bundle`` (in place) and record it."""
    if bundle.layout == "shards":
        raise UsageError("--relabel applies to image folders and CSV files; write the shards again from the "
                         "relabelled data (fvt data shard) instead")
    copy = Path(run_dir) / RELABEL_NAME if run_dir is not None else None
    source = Path(spec).expanduser()
    if copy is not None and copy.is_file() and (not write or not source.is_file()):
        source = copy  # what the run trained with, even if the user's file changed or moved since
    if not source.is_file():
        raise DataError(f"--relabel {spec}: no such file")
    plan = plan_relabel(read_relabel(source), bundle, source)
    changed = dropped = 0
    for split in ("train", "val", "test"):
        ds = getattr(bundle, split)
        if ds is None:
            continue
        kept = []
        for p, t in ds.samples:
            new = plan.get(_key(p), t)
            if _key(p) in plan and new is None:
                dropped += 1
                continue
            changed += int(new != t)
            kept.append((p, new))
        ds.samples = kept
    bundle.counts = {s: {c: sum(1 for _, t in getattr(bundle, s).samples if t == i) for i, c in enumerate(bundle.classes)}
                     for s in ("train", "val", "test") if getattr(bundle, s) is not None}
    empty = [c for c, n in bundle.counts.get("train", {}).items() if n == 0]
    if empty:
        raise DataError(f"--relabel {spec} leaves class(es) {', '.join(empty)} without a training image")
    if write and copy is not None:
        _record(source, copy)
    bundle.relabel = {"file": str(copy if write and copy is not None else source), "rows": len(plan),
                      "relabelled": changed, "dropped": dropped}


def _record(source: Path, copy: Path) -> None:
    """Copy the file into the run folder; a resumed run must use the file it started with."""
    if copy.is_file():
        if copy.resolve() == source.resolve() or filecmp.cmp(source, copy, shallow=False):
            return
        raise DataError(f"--relabel {source} differs from {copy}, the file this run started with; resume with "
                        f"--relabel {copy}, or start a new run (another --output) for the new labels")
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, copy)
