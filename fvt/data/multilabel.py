"""Multi-label data: a set of labels per image (tags, attributes, defects).

Sources (relative paths are relative to the CSV's folder; labels are sorted names, like classes):

* a CSV of ``path,labels`` rows, the labels separated by ``;`` (``beach.jpg,sea;sky``); an empty
  label field means the image shows none of the labels; a header row ``path,labels`` is optional;
* a CSV whose header names the labels, ``path,sea,sky,sand``, and one 0/1 column per label;
* shards written by ``fvt data shard`` from either (their ``index.json`` says ``"task": "multilabel"``).

``csv_task(path)``: multi-label when the CSV has 0/1 columns or a row whose label field holds ``;``
(``fvt.data.multilabel_build.resolve_task`` turns ``--task auto`` into the task of any ``--data``).

The split (``iterative_split``) is iterative multi-label stratification (Sechidis et al. 2011) as
implemented by the ``iterative-stratification`` package: each label keeps about the validation
fraction of its images in validation, rare labels and label combinations included, where a per-class
split cannot work (an image belongs to several classes at once).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DataError
from .dataset import ImageDataset
from .decode import is_image_name
from .discovery import _csv_rows

log = logging.getLogger("fvt.data")
LABEL_SEP = ";"
HEADER_NAMES = ("path", "file", "filename", "image", "filepath")
TASKS = ("multiclass", "multilabel")
LabelSets = List[Tuple[Path, Tuple[str, ...]]]  # (path, sorted label names)


# -- which task ----------------------------------------------------------------------------------
def _content_rows(path: Path):
    for lineno, row in _csv_rows(path):
        if row and any(row) and not row[0].startswith("#"):
            yield lineno, row


def csv_task(path: Path) -> str:
    """``multilabel`` when the CSV has 0/1 columns (a header of more than two columns) or a row with
    ``;`` in its label field, else ``multiclass``."""
    for lineno, row in _content_rows(path):
        if lineno == 1 and row[0].lower() in HEADER_NAMES:
            if len(row) > 2:
                return "multilabel"
            continue
        if len(row) >= 2 and LABEL_SEP in row[1]:
            return "multilabel"
    return "multiclass"


# -- reading -------------------------------------------------------------------------------------
def split_labels(text: str, where: str) -> Tuple[str, ...]:
    labels = tuple(sorted({t.strip() for t in text.split(LABEL_SEP) if t.strip()}))
    for t in labels:
        if any(ord(ch) < 32 for ch in t):
            raise DataError(f"{where}: label {t!r} holds a control character")
    return labels


def _header(row: List[str], where: str) -> Optional[List[str]]:
    """Label names of a 0/1-column header, None for a ``path,labels`` header."""
    if len(row) <= 2:
        return None
    names = row[1:]
    dup = [n for n, k in Counter(names).items() if k > 1]
    if dup or not all(names):
        raise DataError(f"{where}: the header must name each label column once ({'repeated: ' + ', '.join(dup) if dup else 'an empty column name'})")
    return names


def read_label_csv(path: Path, ignored: Counter) -> Tuple[LabelSets, List[str]]:
    """``(items, labels named by a 0/1 header or [])``. Errors name the line: a field count that does
    not fit, a 0/1 cell holding something else, one path listed with two label sets."""
    base, items, header = path.parent, [], None
    first_seen: Dict[Path, Tuple[int, Tuple[str, ...]]] = {}
    repeats = 0
    for lineno, row in _content_rows(path):
        where = f"{path}:{lineno}"
        if lineno == 1 and row[0].lower() in HEADER_NAMES:
            header = _header(row, where)
            continue
        if any("\0" in c for c in row):
            raise DataError(f"{where}: cannot parse this CSV row (NUL byte)")
        if header is not None:
            if len(row) != len(header) + 1:
                raise DataError(f"{where}: expected {len(header) + 1} fields (path and one 0/1 per label), got {len(row)}")
            bad = [(h, v) for h, v in zip(header, row[1:]) if v not in ("0", "1")]
            if bad:
                raise DataError(f"{where}: column {bad[0][0]!r} holds {bad[0][1]!r}; a 0/1 column takes 0 or 1")
            labels = tuple(sorted(h for h, v in zip(header, row[1:]) if v == "1"))
        else:
            if len(row) != 2:
                raise DataError(f"{where}: expected 2 fields 'path,labels' (labels separated by ';'), got "
                                f"{len(row)}: {','.join(row)!r}; a path holding a comma must be quoted, and a CSV "
                                f"with one 0/1 column per label needs a header row naming the labels")
            labels = split_labels(row[1], where)
        p = Path(row[0]).expanduser()
        p = p if p.is_absolute() else base / p
        if not is_image_name(p):
            ignored["non_image"] += 1
            continue
        if p in first_seen:
            if first_seen[p][1] != labels:
                raise DataError(f"{where}: {row[0]!r} is labelled {';'.join(labels)!r} here and "
                                f"{';'.join(first_seen[p][1])!r} on line {first_seen[p][0]}; list each image once")
            repeats += 1
            continue
        first_seen[p] = (lineno, labels)
        items.append((p, labels))
    if repeats:
        log.warning(f"{path}: {repeats} rows repeat a path already listed with the same labels; each image is used once")
    if not items:
        raise DataError(f"CSV {path} lists no image files (expected rows of path,labels)")
    return items, list(header or [])


# -- the dataset ---------------------------------------------------------------------------------
class MultiLabelDataset(ImageDataset):
    """``ImageDataset`` whose samples hold label-index tuples and whose items carry a multi-hot float
    target (one 0/1 per label) instead of a class index."""

    task = "multilabel"

    def __init__(self, samples: Sequence[Tuple[Path, Sequence[int]]], classes: Sequence[str], transform=None,
                 bad_file_log=None, min_decode_size: Optional[int] = None, channels: int = 3):
        super().__init__([], classes, transform, bad_file_log, min_decode_size, channels)
        self.samples = [(Path(p), tuple(sorted({int(i) for i in t}))) for p, t in samples]

    def target_vector(self, labels: Sequence[int]) -> torch.Tensor:
        v = torch.zeros(len(self.classes), dtype=torch.float32)
        if labels:
            v[list(labels)] = 1.0
        return v

    def label_matrix(self) -> np.ndarray:
        """(N, labels) 0/1 matrix of every sample."""
        return label_matrix([t for _, t in self.samples], len(self.classes))

    def __getitem__(self, key):
        img, labels, index = super().__getitem__(key)
        return img, self.target_vector(labels), index


def label_matrix(label_sets: Sequence[Sequence[int]], num_labels: int) -> np.ndarray:
    y = np.zeros((len(label_sets), num_labels), dtype=np.uint8)
    for i, t in enumerate(label_sets):
        y[i, list(t)] = 1
    return y


def encode_target(labels: Sequence[int]) -> str:
    """A label-index set as shards store it (``0;3``; empty for none)."""
    return LABEL_SEP.join(str(int(i)) for i in labels)


def decode_target(text: str, num_labels: int) -> torch.Tensor:
    v = torch.zeros(num_labels, dtype=torch.float32)
    idx = [int(t) for t in str(text).split(LABEL_SEP) if t.strip()]
    if idx:
        v[idx] = 1.0
    return v


# -- the split -----------------------------------------------------------------------------------
def iterative_split(items: LabelSets, classes: Sequence[str], val_fraction: float, seed: int,
                    keep_together: Sequence[Sequence[Path]] = ()) -> Tuple[LabelSets, LabelSets]:
    """Hold out ``val_fraction`` of the images so that every label keeps about that fraction in
    validation (``iterstrat.MultilabelStratifiedShuffleSplit``). Deterministic for a file list and
    seed. ``keep_together``: groups of identical files, each kept on the side of its first file."""
    items = sorted(items)
    if val_fraction <= 0 or len(items) < 2:
        return items, []
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    idx = {c: i for i, c in enumerate(classes)}
    y = label_matrix([[idx[c] for c in labels] for _, labels in items], len(classes))
    n_val = min(max(int(round(len(items) * val_fraction)), 1), len(items) - 1)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=int(seed) % (2 ** 32))
    _, val_idx = next(splitter.split(np.zeros(len(items)), y))
    in_val = {items[i][0] for i in val_idx}
    for group in keep_together:
        if min(group) in in_val:
            in_val.update(group)
        else:
            in_val.difference_update(group)
    return [it for it in items if it[0] not in in_val], [it for it in items if it[0] in in_val]


# -- statistics ----------------------------------------------------------------------------------
def label_stats(items: LabelSets, classes: Sequence[str]) -> dict:
    """Images per label, labels per image (histogram) and the co-occurrence matrix (images holding both
    labels; the diagonal is the label's own count)."""
    idx = {c: i for i, c in enumerate(classes)}
    y = label_matrix([[idx[c] for c in labels if c in idx] for _, labels in items], len(classes)).astype(np.int64)
    per_image = Counter(int(k) for k in y.sum(axis=1))
    return {"counts": {c: int(n) for c, n in zip(classes, y.sum(axis=0))},
            "labels_per_image": dict(sorted(per_image.items())), "cooccurrence": (y.T @ y).tolist()}


def save_split(path: Path, root: Path, classes: Sequence[str], val_split: float, seed: int,
               train: LabelSets, val: LabelSets) -> None:
    from .pipeline import _atomic_write_text, _rel

    payload = {"version": 1, "task": "multilabel", "data": str(root), "val_split": val_split, "split_seed": seed,
               "classes": list(classes), "train": [[_rel(p, root), list(t)] for p, t in train],
               "val": [[_rel(p, root), list(t)] for p, t in val]}
    _atomic_write_text(path, json.dumps(payload, indent=0, ensure_ascii=False))


def load_split(path: Path, root: Path, present: Dict[Path, Tuple[str, ...]]) -> Tuple[LabelSets, LabelSets, int, int]:
    """(train, val, listed files now gone, new files not listed) of a saved split; each file keeps the
    labels the CSV gives it now."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        parts = {s: [root / rel if not Path(rel).is_absolute() else Path(rel) for rel, _ in saved[s]]
                 for s in ("train", "val")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a valid split file ({e}); delete it to re-split") from None
    if saved.get("task") != "multilabel":
        raise DataError(f"{path} is the split of a multi-class run; delete it to re-split, or train into a new --output")
    listed = {p for v in parts.values() for p in v}
    gone = sum(1 for p in listed if p not in present)
    new = sum(1 for p in present if p not in listed)
    keep = {s: [(p, present[p]) for p in v if p in present] for s, v in parts.items()}
    return keep["train"], keep["val"], gone, new
