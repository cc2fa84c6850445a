"""Datasets for ``fvt eval`` and ``fvt predict``.

* ``load_eval_set(config, run_dir, data_override=None, ...)``: a finished run's validation
  set (from ``RUN/split.json``, the pre-split ``val`` folder or ``--val-data``), or the folder
  given by ``fvt eval --data DIR`` (a class-folder root, a pre-split root -> its val folder, or
  a CSV). Classes are checked against the checkpoint's.
* ``image_folder(dir, transform, classes)``: ``root/<class>/**`` as an ``ImageDataset``.
* ``expand_image_paths(paths)``: files, folders (recursive) and globs -> image files.

Every dataset keeps each sample's path (``dataset.paths``); bad files are left out with one
warning line.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

from ..errors import DataError
from .dataset import ImageDataset
from .decode import is_image_name
from .discovery import VAL_NAMES, find_split_dir, list_class_folders, read_csv
from .scan import scan_files
from .transforms import Preprocessing, eval_transform

log = logging.getLogger("fvt.data")
PathLike = Union[str, os.PathLike]


def _check_same_classes(found: Sequence[str], expected: Optional[Sequence[str]], where: Path) -> List[str]:
    found = sorted(set(found))
    if expected is None:
        return found
    extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    if extra or missing:
        parts = [f"not in the checkpoint: {', '.join(extra)}" if extra else "",
                 f"missing from the folder: {', '.join(missing)}" if missing else ""]
        raise DataError(f"classes of {where} differ from the checkpoint's ({'; '.join(p for p in parts if p)})")
    return list(expected)


def _usable(items, verify: bool = False):
    infos = scan_files([p for p, _ in items], verify=verify)
    bad = {i.path for i in infos if not i.ok}
    if bad:
        log.warning(f"{len(bad)} of {len(items)} files are not usable images and were left out "
                    f"(e.g. {next(iter(sorted(bad)))})")
    return [(p, c) for p, c in items if p not in bad]


def image_folder(root: PathLike, transform: Optional[Callable] = None, classes: Optional[Sequence[str]] = None,
                 min_decode_size: Optional[int] = None, channels: int = 3, task: str = "multiclass",
                 split: str = "val") -> ImageDataset:
    """A class-folder root, a pre-split root (its ``split`` folder: val or test), a CSV of path,label, or
    shards; ``task`` multilabel: a CSV of path,labels or 0/1 columns (``fvt.data.multilabel``)."""
    from .streaming import is_shard_spec, open_eval_shards

    if is_shard_spec(root):
        return open_eval_shards(str(root), transform, classes, min_decode_size, channels=channels, split=split)
    if task == "multilabel":
        from .multilabel_build import open_label_csv

        return open_label_csv(root, transform, classes, min_decode_size, channels)
    root = Path(root).expanduser()
    ignored: Counter = Counter()
    if root.is_file() and root.suffix.lower() == ".csv":
        items = read_csv(root, ignored)
    elif root.is_dir():
        names = VAL_NAMES if split == "val" else (split,)
        sub = find_split_dir(root, names) if find_split_dir(root, ("train",)) else None
        skipped: list = []
        items, _ = list_class_folders(sub or root, ignored, skipped)
        root = sub or root
        if skipped:
            log.warning(f"{len(skipped)} folders were skipped, e.g. {skipped[0][0]}: {skipped[0][1]}")
    else:
        raise DataError(f"data not found: {root} (expected a folder of class folders or a CSV of path,label)")
    items = _usable(items)
    if not items:
        raise DataError(f"{root} holds no usable image in class folders")
    names = _check_same_classes([c for _, c in items], classes, root)
    idx = {c: i for i, c in enumerate(names)}
    return ImageDataset([(p, idx[c]) for p, c in items], names, transform, None, min_decode_size, channels)


def load_eval_set(config: Any, run_dir: Optional[PathLike] = None, data_override: Optional[PathLike] = None,
                  preprocessing: Union[Preprocessing, dict, None] = None,
                  classes: Optional[Sequence[str]] = None) -> ImageDataset:
    """The evaluation set of a run. ``config``: a ``Config`` or ``Config.to_dict()`` (as stored
    in checkpoints); ``preprocessing``/``classes``: the checkpoint's (default: from config /
    the data)."""
    from ..config import Config

    cfg = Config.from_dict(config) if isinstance(config, dict) else config
    if isinstance(preprocessing, dict):
        preprocessing = Preprocessing.from_dict(preprocessing)
    preproc = preprocessing or Preprocessing.from_config(cfg)
    tf = eval_transform(preproc)
    if data_override is not None:
        task = cfg.data.task
        if task == "auto":
            from .multilabel_build import resolve_task

            task = resolve_task(task, data_override)
        return image_folder(data_override, tf, classes, preproc.min_decode_size, preproc.channels, task)
    from .build import build_data

    if run_dir is not None and cfg.data.val_split > 0 and not (Path(run_dir) / "split.json").is_file():
        log.warning(f"{Path(run_dir) / 'split.json'} not found: recomputing the split from split_seed")
    bundle = build_data(cfg, run_dir, preprocessing=preproc, write=False)
    ds = bundle.val or bundle.test
    if ds is None:
        raise DataError(f"the run's data {bundle.root} has no validation set (val_split 0); pass --data DIR")
    _check_same_classes(bundle.classes, classes, bundle.root)
    return ds


def expand_image_paths(paths: Sequence[PathLike]) -> List[Path]:
    """Files, folders (searched recursively, hidden entries skipped) and glob patterns."""
    out: List[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and is_image_name(f)]
        elif p.exists():
            out.append(p)
        else:
            matches = sorted(glob.glob(str(p), recursive=True))
            if not matches:
                raise DataError(f"no such file, folder or matching pattern: {raw}")
            out += [Path(m) for m in matches if Path(m).is_file() and is_image_name(m)]
    return out
