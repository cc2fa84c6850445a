"""Finding the images and their classes in the three supported layouts.

* ``folders``:  ``root/<class>/**/<image>`` -- split automatically (stratified) into train/val;
* ``presplit``: ``root/train/<class>/...`` with ``root/val`` (or ``valid``/``validation``) and an
  optional ``root/test``;
* ``csv``:      a CSV file of ``path,label`` rows (a header row is optional; relative paths are
  relative to the CSV's folder) -- split automatically like ``folders``.

Class order is the sorted class names. Hidden files/folders (``.name``), files that are not
images by extension and stray files outside class folders are skipped and counted.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DataError
from .decode import is_image_name

VAL_NAMES = ("val", "valid", "validation")
Labelled = List[Tuple[Path, str]]  # (path, class name)


@dataclass
class Discovery:
    layout: str                      # folders | presplit | csv
    root: Path                       # folder that relative paths in split.json refer to
    splits: Dict[str, Labelled]      # "all" (to be split) or "train"/"val"/"test"
    class_dirs: Dict[str, Dict[str, Path]] = field(default_factory=dict)  # split -> class -> folder
    ignored: Counter = field(default_factory=Counter)  # hidden / non_image / stray


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def list_class_folders(root: Path, ignored: Counter) -> Tuple[Labelled, Dict[str, Path]]:
    """Images under ``root/<class>/**``, as (path, class) sorted by class then path."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    items: Labelled = []
    dirs: Dict[str, Path] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _hidden(entry.name):
            ignored["hidden"] += 1
            continue
        if not entry.is_dir():
            ignored["stray"] += 1  # e.g. a README or labels.txt next to the class folders
            continue
        dirs[entry.name] = Path(entry.path)
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            hidden_dirs = [d for d in dirnames if _hidden(d)]
            ignored["hidden"] += len(hidden_dirs)
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for name in sorted(filenames):
                if _hidden(name):
                    ignored["hidden"] += 1
                elif not is_image_name(name):
                    ignored["non_image"] += 1
                else:
                    items.append((Path(dirpath) / name, entry.name))
    return items, dirs


def read_csv(path: Path, ignored: Counter) -> Labelled:
    """Rows of ``path,label``; a first row naming the columns is skipped."""
    base = path.parent
    items: Labelled = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV {path}: {e}") from None
    for lineno, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise DataError(f"{path}:{lineno}: expected 'path,label', got {','.join(row)!r}")
        if lineno == 1 and row[0].lower() in ("path", "file", "filename", "image", "filepath"):
            continue
        p = Path(row[0]).expanduser()
        p = p if p.is_absolute() else base / p
        if not is_image_name(p):
            ignored["non_image"] += 1
            continue
        items.append((p, row[1]))
    if not items:
        raise DataError(f"CSV {path} lists no image files (expected rows of path,label)")
    return items


def find_split_dir(root: Path, names) -> Optional[Path]:
    for n in names:
        for cand in (n, n.capitalize(), n.upper()):
            if (root / cand).is_dir():
                return root / cand
    return None


def discover(data: str | os.PathLike, val_data: Optional[str | os.PathLike] = None) -> Discovery:
    """Work out the layout of ``data`` (and the optional separate ``val_data``)."""
    if data is None:
        raise DataError("no data given: pass --data DIR (class folders, or train/ and val/) or a CSV of path,label")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"data not found: {root}")
    ignored: Counter = Counter()
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"--data {root} is a file; expected a folder or a .csv of path,label")
        disc = Discovery("csv", root.parent, {"all": read_csv(root, ignored)}, ignored=ignored)
    else:
        train_dir = find_split_dir(root, ("train",))
        val_dir = find_split_dir(root, VAL_NAMES)
        if train_dir is not None and (val_dir is not None or val_data):
            splits, dirs = {}, {}
            splits["train"], dirs["train"] = list_class_folders(train_dir, ignored)
            if val_dir is not None:
                splits["val"], dirs["val"] = list_class_folders(val_dir, ignored)
            test_dir = find_split_dir(root, ("test",))
            if test_dir is not None:
                splits["test"], dirs["test"] = list_class_folders(test_dir, ignored)
            disc = Discovery("presplit", root, splits, dirs, ignored)
        else:
            items, dirs = list_class_folders(root, ignored)
            disc = Discovery("folders", root, {"all": items}, {"all": dirs}, ignored)
    if val_data:
        # A separate validation set replaces any automatic or pre-split validation set.
        vroot = Path(val_data).expanduser()
        if vroot.is_file() and vroot.suffix.lower() == ".csv":
            disc.splits["val"] = read_csv(vroot, disc.ignored)
            disc.class_dirs.pop("val", None)
        else:
            vdir = find_split_dir(vroot, VAL_NAMES) if find_split_dir(vroot, ("train",)) else None
            disc.splits["val"], disc.class_dirs["val"] = list_class_folders(vdir or vroot, disc.ignored)
        if "all" in disc.splits:
            disc.splits["train"] = disc.splits.pop("all")
            if "all" in disc.class_dirs:
                disc.class_dirs["train"] = disc.class_dirs.pop("all")
    return disc
