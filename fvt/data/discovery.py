"""Finding the images and their classes in the three supported layouts.

* ``folders``:  ``root/<class>/**/<image>`` -- split automatically (stratified) into train/val;
* ``presplit``: ``root/train/<class>/...`` with ``root/val`` (or ``valid``/``validation``) and an
  optional ``root/test``;
* ``csv``:      a CSV file of ``path,label`` rows (a header row is optional; relative paths are
  relative to the CSV's folder) -- split automatically like ``folders``.

Class order is the sorted class names. Hidden files/folders (``.name``), files that are not
images by extension and stray files outside class folders are skipped and counted. Folders
that cannot be read and symlinked folders already walked (a loop such as ``ln -s . again``, or
a second way into one folder) are skipped and reported in ``Discovery.problems`` as
``(path, reason)``, which the pipeline lists with the bad files.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DataError
from .decode import is_image_name

log = logging.getLogger("fvt.data")
VAL_NAMES = ("val", "valid", "validation")
Labelled = List[Tuple[Path, str]]  # (path, class name)


@dataclass
class Discovery:
    layout: str                      # folders | presplit | csv
    root: Path                       # folder that relative paths in split.json refer to
    splits: Dict[str, Labelled]      # "all" (to be split) or "train"/"val"/"test"
    class_dirs: Dict[str, Dict[str, Path]] = field(default_factory=dict)  # split -> class -> folder
    ignored: Counter = field(default_factory=Counter)  # hidden / non_image / stray
    problems: List[Tuple[Path, str]] = field(default_factory=list)  # folders skipped: unreadable, loops


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def list_class_folders(root: Path, ignored: Counter,
                       problems: Optional[List[Tuple[Path, str]]] = None) -> Tuple[Labelled, Dict[str, Path]]:
    """Images under ``root/<class>/**``, as (path, class) sorted by class then path.

    Symlinks are followed, but each real folder is walked once: a link back to a folder
    already walked (a loop, or a link into another class) is skipped and reported in
    ``problems``, as is a folder that cannot be read."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    problems = [] if problems is None else problems
    items: Labelled = []
    dirs: Dict[str, Path] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot read data folder {root}: {e.strerror or e}") from None
    classes = [e for e in entries if not _hidden(e.name) and e.is_dir()]
    ignored["hidden"] += sum(1 for e in entries if _hidden(e.name))
    ignored["stray"] += sum(1 for e in entries if not _hidden(e.name) and not e.is_dir())  # README, labels.txt
    # every class folder counts as walked from the start: a link into another class is not followed
    walked = {os.path.realpath(e.path): Path(e.path) for e in classes}

    def unreadable(err: OSError) -> None:
        problems.append((Path(err.filename or "?"), f"cannot read folder: {err.strerror or err}"))

    for entry in classes:
        dirs[entry.name] = Path(entry.path)
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True, onerror=unreadable):
            hidden_dirs = [d for d in dirnames if _hidden(d)]
            ignored["hidden"] += len(hidden_dirs)
            keep = []
            for d in sorted(x for x in dirnames if not _hidden(x)):
                sub = os.path.join(dirpath, d)
                real = os.path.realpath(sub)
                if real in walked:
                    problems.append((Path(sub), f"symlink loop: same folder as {walked[real]}, already read"))
                    continue
                walked[real] = Path(sub)
                keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                if _hidden(name):
                    ignored["hidden"] += 1
                elif not is_image_name(name):
                    ignored["non_image"] += 1
                else:
                    items.append((Path(dirpath) / name, entry.name))
    return items, dirs


def _csv_rows(path: Path):
    """``(line number, stripped fields)`` of every row; a row csv cannot parse is a DataError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)
            start = 1
            for row in reader:
                yield start, [c.strip() for c in row]
                start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{start}: cannot parse this CSV row ({e}); rows are path,label "
                        "(quote a field that holds a comma or a quote)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV {path}: {e}") from None


def read_csv(path: Path, ignored: Counter) -> Labelled:
    """Rows of ``path,label``; a first row naming the columns is skipped.

    Errors name the line: a row that cannot be parsed, a row with other than two fields (a path
    holding an unquoted comma), an empty label, one path listed with two labels. A path listed
    twice with the same label is kept once, with a warning."""
    base = path.parent
    items: Labelled = []
    first_seen: Dict[Path, Tuple[int, str]] = {}
    repeats = 0
    for lineno, row in _csv_rows(path):
        if not row or not any(row) or row[0].startswith("#"):
            continue
        if lineno == 1 and row[0].lower() in ("path", "file", "filename", "image", "filepath"):
            continue
        if len(row) != 2:
            hint = (f"; a path holding a comma must be quoted: \"{','.join(row[:-1])}\",{row[-1]}"
                    if len(row) > 2 else "")
            raise DataError(f"{path}:{lineno}: expected 2 fields 'path,label', got {len(row)}: "
                            f"{','.join(row)!r}{hint}")
        if any("\0" in c for c in row):
            raise DataError(f"{path}:{lineno}: cannot parse this CSV row (NUL byte); rows are path,label")
        if not row[1]:
            raise DataError(f"{path}:{lineno}: empty label for {row[0]!r} (every row needs path,label)")
        if any(ord(ch) < 32 for ch in row[1]):
            raise DataError(f"{path}:{lineno}: label {row[1]!r} holds a control character")
        p = Path(row[0]).expanduser()
        p = p if p.is_absolute() else base / p
        if not is_image_name(p):
            ignored["non_image"] += 1
            continue
        if p in first_seen:
            line0, label0 = first_seen[p]
            if label0 != row[1]:
                raise DataError(f"{path}:{lineno}: {row[0]!r} is labelled {row[1]!r} here and {label0!r} on "
                                f"line {line0}; give each image one label")
            repeats += 1
            continue
        first_seen[p] = (lineno, row[1])
        items.append((p, row[1]))
    if repeats:
        log.warning(f"{path}: {repeats} rows repeat a path already listed with the same label; each image is used once")
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
    problems: List[Tuple[Path, str]] = []
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"--data {root} is a file; expected a folder or a .csv of path,label")
        disc = Discovery("csv", root.parent, {"all": read_csv(root, ignored)}, ignored=ignored)
    else:
        train_dir = find_split_dir(root, ("train",))
        val_dir = find_split_dir(root, VAL_NAMES)
        if train_dir is not None and (val_dir is not None or val_data):
            splits, dirs = {}, {}
            splits["train"], dirs["train"] = list_class_folders(train_dir, ignored, problems)
            if val_dir is not None:
                splits["val"], dirs["val"] = list_class_folders(val_dir, ignored, problems)
            test_dir = find_split_dir(root, ("test",))
            if test_dir is not None:
                splits["test"], dirs["test"] = list_class_folders(test_dir, ignored, problems)
            disc = Discovery("presplit", root, splits, dirs, ignored, problems)
        else:
            items, dirs = list_class_folders(root, ignored, problems)
            disc = Discovery("folders", root, {"all": items}, {"all": dirs}, ignored, problems)
    if val_data:
        # A separate validation set replaces any automatic or pre-split validation set.
        vroot = Path(val_data).expanduser()
        if vroot.is_file() and vroot.suffix.lower() == ".csv":
            disc.splits["val"] = read_csv(vroot, disc.ignored)
            disc.class_dirs.pop("val", None)
        else:
            vdir = find_split_dir(vroot, VAL_NAMES) if find_split_dir(vroot, ("train",)) else None
            disc.splits["val"], disc.class_dirs["val"] = list_class_folders(vdir or vroot, disc.ignored, disc.problems)
        if "all" in disc.splits:
            disc.splits["train"] = disc.splits.pop("all")
            if "all" in disc.class_dirs:
                disc.class_dirs["train"] = disc.class_dirs.pop("all")
    return disc
