"""Multi-label data into the data stage: the task of ``--data``, the training ``DataBundle``, eval sets
and ``fvt data inspect`` (the format and the split are in ``multilabel``)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..errors import DataError, UsageError
from .bundle import DataBundle
from .multilabel import (TASKS, LabelSets, MultiLabelDataset, csv_task, iterative_split, label_stats, load_split,
                         read_label_csv, save_split)
from .scan import BAD_FILES_NAME, find_duplicates, scan_files, write_bad_files
from .transforms import Preprocessing, eval_transform, train_transform

log = logging.getLogger("fvt.data")


def _is_csv(data) -> bool:
    p = Path(str(data)).expanduser()
    return p.is_file() and p.suffix.lower() == ".csv"


def resolve_task(task: str, data, val_data=None) -> str:
    """The task ``--task`` (auto|multiclass|multilabel) means for ``--data``: auto is multi-label for a
    CSV with 0/1 columns or ';'-separated labels and for shards whose index says so. A multi-label task
    on a folder of class folders is a DataError."""
    from .streaming import ShardSource, is_shard_spec

    if task not in ("auto", *TASKS):
        raise UsageError(f"--task {task!r}: use auto, multiclass or multilabel")
    if data is None:
        return "multiclass" if task == "auto" else task
    if is_shard_spec(data):
        try:
            found = ShardSource(str(data)).task
        except DataError:
            found = "multiclass"  # unreadable shards: the data stage reports that itself
    elif _is_csv(data):
        found = csv_task(Path(data).expanduser())
        if found == "multiclass" and val_data and _is_csv(val_data):
            found = csv_task(Path(val_data).expanduser())
    else:
        if task == "multilabel" and Path(str(data)).expanduser().exists():
            raise DataError(f"--data {data}: multi-label data is a CSV (path,labels with ';' between labels, or "
                            f"one 0/1 column per label) or shards made from one, not a folder of class folders")
        found = "multiclass"
    return found if task == "auto" else task


def _read(data, ignored: Counter) -> LabelSets:
    p = Path(str(data)).expanduser()
    if not _is_csv(p):
        raise DataError(f"{data}: multi-label data is a CSV of path,labels (or 0/1 columns); "
                        f"{'no such file' if not p.exists() else 'not a .csv file'}")
    return read_label_csv(p, ignored)[0]


def _labels(splits: Dict[str, LabelSets], first: str, root: Path) -> List[str]:
    classes = sorted({c for _, labels in splits[first] for c in labels})
    if len(classes) < 2:
        raise DataError(f"{root} uses {len(classes)} label(s) ({', '.join(classes) or 'none'}); need at least 2")
    for split, items in splits.items():
        extra = sorted({c for _, labels in items for c in labels} - set(classes))
        if extra:
            raise DataError(f"labels of the {split} set not in the training data: {', '.join(extra[:10])}")
    return classes


def _split(cfg: Any, run_dir: Optional[Path], root: Path, usable: LabelSets, classes, writer: bool, rank: int):
    d = cfg.data
    split_path = run_dir / "split.json" if run_dir is not None else None
    if split_path is not None and split_path.is_file():
        train, val, gone, new = load_split(split_path, root, dict(usable))
        if rank == 0 and (gone or new):
            log.warning(f"reusing {split_path}: {gone} listed files are gone or bad, {new} new files are not in it "
                        "and are left out (delete it to re-split)")
        return train, val, split_path
    groups = find_duplicates(p for p, _ in usable)
    train, val = iterative_split(usable, classes, d.val_split, d.split_seed, keep_together=groups)
    if writer:
        save_split(split_path, root, classes, d.val_split, d.split_seed, train, val)
        return train, val, split_path
    return train, val, None


def build_multilabel_data(cfg: Any, run_dir=None, rank: int = 0, world_size: int = 1,
                          default_input_size: Optional[Sequence[int]] = None,
                          preprocessing: Optional[Preprocessing] = None, write: bool = True) -> DataBundle:
    """``build_data`` for a multi-label CSV: scan, iterative stratified split (``RUN/split.json``),
    ``MultiLabelDataset`` train/val sets."""
    from .pipeline import _reasons, duplicate_groups

    d = cfg.data
    run_dir = Path(run_dir) if run_dir is not None else None
    writer = write and rank == 0 and run_dir is not None
    ignored: Counter = Counter()
    root = Path(str(d.data)).expanduser()
    splits = {"train" if d.val_data else "all": _read(root, ignored)}
    if d.val_data:
        splits["val"] = _read(d.val_data, ignored)
    files = sorted({p for items in splits.values() for p, _ in items})
    infos = scan_files(files, verify=d.verify_images, progress=rank == 0)
    bad = [(i.path, i.reason) for i in infos if not i.ok]
    bad_set = {p for p, _ in bad}
    usable = {s: [(p, t) for p, t in items if p not in bad_set] for s, items in splits.items()}
    classes = _labels(usable, "train" if d.val_data else "all", root)
    if writer:
        write_bad_files(run_dir, bad)
    if bad and rank == 0:
        where = f"; listed in {run_dir / BAD_FILES_NAME}" if writer else ""
        log.warning(f"{len(bad)} of {len(files)} files are not usable images and were excluded ({_reasons(bad)}){where}")
    split_file = None
    if "all" in usable:
        train, val, split_file = _split(cfg, run_dir, root.parent, usable["all"], classes, writer, rank)
        usable = {"train": train, "val": val}
    missing = [c for c in classes if not any(c in t for _, t in usable["train"])]
    if missing and rank == 0:
        log.warning(f"labels with no training image after the split: {', '.join(missing[:10])}")
    preproc = preprocessing or Preprocessing.from_config(cfg, default_input_size)
    idx = {c: i for i, c in enumerate(classes)}
    log_path = run_dir / BAD_FILES_NAME if run_dir is not None else None

    def make(split, transform, min_size):
        items = usable.get(split)
        if not items:
            return None
        return MultiLabelDataset([(p, [idx[c] for c in t]) for p, t in items], classes, transform, log_path,
                                 min_size, preproc.channels)

    train_ds = make("train", train_transform(preproc, cfg.aug), max(preproc.input_size))
    if train_ds is None:
        raise DataError(f"no usable training image in {root}")
    val_ds = make("val", eval_transform(preproc), preproc.min_decode_size)
    counts = {s: label_stats(items, classes)["counts"] for s, items in usable.items() if items}
    across, within, conflicts = duplicate_groups(usable)
    if conflicts and rank == 0:
        log.warning(f"{len(conflicts)} groups of identical files carry different labels "
                    f"(e.g. {' = '.join(str(p) for p in conflicts[0][:2])}): check their labels")
    if across and rank == 0:
        log.warning(f"{len(across)} groups of identical files are in both train and val "
                    f"(e.g. {' = '.join(str(p) for p in across[0][:2])}): validation scores are optimistic")
    return DataBundle(train_ds, val_ds, None, classes, preproc, "csv", root.parent, counts, bad, across, within,
                      dict(ignored), split_file, infos, task="multilabel")


def open_label_csv(path, transform, classes: Optional[Sequence[str]] = None, min_decode_size: Optional[int] = None,
                   channels: int = 3) -> MultiLabelDataset:
    """A multi-label CSV for ``fvt eval --data`` / export checks: labels must be among ``classes`` (the
    checkpoint's); a label may be absent from this set."""
    items = _read(path, Counter())
    infos = scan_files([p for p, _ in items])
    bad = {i.path for i in infos if not i.ok}
    if bad:
        log.warning(f"{len(bad)} of {len(items)} files are not usable images and were left out (e.g. {min(bad)})")
    items = [(p, t) for p, t in items if p not in bad]
    if not items:
        raise DataError(f"{path} lists no usable image")
    found = sorted({c for _, t in items for c in t})
    names = list(classes) if classes is not None else found
    extra = sorted(set(found) - set(names))
    if extra:
        raise DataError(f"labels of {path} not known to the checkpoint: {', '.join(extra[:10])}")
    idx = {c: i for i, c in enumerate(names)}
    return MultiLabelDataset([(p, [idx[c] for c in t]) for p, t in items], names, transform, None,
                             min_decode_size, channels)
