"""Folder and CSV data: ``build_folder_data(cfg, run_dir, rank, world_size)`` (``fvt.data.build_data``
calls it for everything that is not shards).

It discovers the layout (see ``discovery``), scans every file (``scan``), excludes bad files
(``RUN/bad_files.txt`` + one warning line), checks the classes, splits ``folders``/``csv``
data into train/val (stratified per class; ``RUN/split.json`` written on first use and
reused afterwards, so validation images never leak into training on resume), reports exact
duplicates, and returns a ``DataBundle`` of ready datasets.

Distributed: only rank 0 writes ``split.json`` / ``bad_files.txt`` and logs. The split is a
pure function of the file list and ``split_seed``, and files are written atomically, so other
ranks compute or read the same split; no barrier is needed inside ``build_folder_data``. (Call
``torch.distributed.barrier()`` after it if a rank must read a file rank 0 writes.)

``load_eval_set(config, run_dir, data_override)`` rebuilds a finished run's validation set
for ``fvt eval``; ``image_folder(dir, transform, classes)`` reads an arbitrary folder.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import DataError
from .bundle import DataBundle
from .dataset import ImageDataset
from .discovery import Discovery, Labelled, discover
from .scan import BAD_FILES_NAME, find_duplicates, scan_files, write_bad_files
from .transforms import Preprocessing, eval_transform, train_transform

log = logging.getLogger("fvt.data")
SPLIT_NAME = "split.json"
PathLike = Union[str, os.PathLike]


# -- helpers -----------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def stratified_split(items: Labelled, val_fraction: float, seed: int,
                     keep_together: Sequence[Sequence[Path]] = ()) -> Tuple[Labelled, Labelled]:
    """Per class: shuffle (seeded) and hold out round(n * fraction) files, at least one when
    the class has two or more, never all of them. Deterministic for a given file list.

    ``keep_together``: groups of identical files; each group ends on the side of its first
    (sorted) file, so a duplicate never sits in train and val at once."""
    by_class: Dict[str, List[Path]] = {}
    for p, c in items:
        by_class.setdefault(c, []).append(p)
    train, val = [], []
    for c in sorted(by_class):
        files = sorted(by_class[c])
        random.Random(f"{seed}:{c}").shuffle(files)
        k = int(round(len(files) * val_fraction)) if val_fraction > 0 else 0
        if val_fraction > 0 and len(files) >= 2:
            k = min(max(k, 1), len(files) - 1)
        val += [(p, c) for p in sorted(files[:k])]
        train += [(p, c) for p in sorted(files[k:])]
    if keep_together:
        in_val = {p for p, _ in val}
        for group in keep_together:
            if min(group) in in_val:
                in_val.update(group)
            else:
                in_val.difference_update(group)
        everything = sorted(train + val, key=lambda pc: (pc[1], pc[0]))
        train = [pc for pc in everything if pc[0] not in in_val]
        val = [pc for pc in everything if pc[0] in in_val]
    return train, val


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _load_split(path: Path, root: Path, present: Dict[Path, str]) -> Tuple[Labelled, Labelled, int, int]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        parts = {s: [(root / rel if not Path(rel).is_absolute() else Path(rel), c) for rel, c in saved[s]]
                 for s in ("train", "val")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a valid split file ({e}); delete it to re-split") from None
    saved_classes = saved.get("classes")
    current = sorted(set(present.values()))
    if saved_classes is not None and sorted(saved_classes) != current:
        raise DataError(f"{path} was made for classes {', '.join(saved_classes)} but the data now has "
                        f"{', '.join(current)}; delete it to re-split, or train into a new --output")
    gone = sum(1 for s in parts.values() for p, _ in s if p not in present)
    listed = {p for s in parts.values() for p, _ in s}
    new = sum(1 for p in present if p not in listed)
    keep = {s: [(p, present[p]) for p, _ in v if p in present] for s, v in parts.items()}
    return keep["train"], keep["val"], gone, new


def _check_classes(disc: Discovery, usable: Dict[str, Labelled], raw: Dict[str, Labelled]) -> List[str]:
    for split, items in raw.items():
        have = Counter(c for _, c in usable[split])
        dirs = disc.class_dirs.get(split, {})
        for c in sorted(set(dirs) | {c for _, c in items}):
            if have[c] == 0:
                where = dirs.get(c) or f"class '{c}' in {disc.root}"
                raise DataError(f"class folder {where} has no usable image "
                                f"(put images in it, or remove it)")
    first = "train" if "train" in usable else "all"
    classes = sorted({c for _, c in usable[first]})
    if len(classes) < 2:
        where = disc.class_dirs.get(first) and next(iter(disc.class_dirs[first].values())).parent
        raise DataError(f"{where or disc.root} holds {len(classes)} class(es) ({', '.join(classes) or 'none'}); "
                        "need at least 2 class folders with images")
    for split in ("val", "test"):
        if split in usable:
            other = {c for _, c in usable[split]}
            extra, missing = sorted(other - set(classes)), sorted(set(classes) - other)
            if extra or (split == "val" and missing):
                sdir = disc.class_dirs.get(split) and next(iter(disc.class_dirs[split].values())).parent
                msg = "; ".join(x for x in (f"only in {split}: {', '.join(extra)}" if extra else "",
                                            f"missing from {split}: {', '.join(missing)}" if missing else "") if x)
                raise DataError(f"class folders of {sdir or split} differ from the training classes ({msg})")
    return classes


# -- the entry point ---------------------------------------------------------------------
def build_folder_data(cfg: Any, run_dir: Optional[PathLike] = None, rank: int = 0, world_size: int = 1,
               default_input_size: Optional[Sequence[int]] = None,
               preprocessing: Optional[Preprocessing] = None, write: bool = True) -> DataBundle:
    """Discover, scan, split and wrap the folder or CSV data of ``cfg`` (a ``fvt.config.Config``).

    ``default_input_size``: the model's own input size, used when ``cfg.model.img_size`` is
    unset. ``write=False`` reads an existing ``split.json`` but writes nothing.
    """
    d = cfg.data
    if not 0.0 <= d.val_split < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {d.val_split}")
    run_dir = Path(run_dir) if run_dir is not None else None
    writer = write and rank == 0 and run_dir is not None
    disc = discover(d.data, d.val_data)

    all_files = sorted({p for items in disc.splits.values() for p, _ in items})
    infos = scan_files(all_files, verify=d.verify_images, progress=rank == 0)
    bad = [(i.path, i.reason) for i in infos if not i.ok]
    bad_set = {p for p, _ in bad}
    usable = {s: [(p, c) for p, c in items if p not in bad_set] for s, items in disc.splits.items()}
    classes = _check_classes(disc, usable, disc.splits)
    if writer:
        write_bad_files(run_dir, bad + disc.problems)
    where = f"; listed in {run_dir / BAD_FILES_NAME}" if writer else ""
    if bad and rank == 0:
        log.warning(f"{len(bad)} of {len(all_files)} files are not usable images and were excluded "
                    f"({_reasons(bad)}){where}")
    if disc.problems and rank == 0:
        p, r = disc.problems[0]
        log.warning(f"{len(disc.problems)} folders were skipped ({_reasons(disc.problems)}), e.g. {p}: {r}{where}")
    bad = bad + disc.problems

    split_file = None
    if "all" in usable:
        present = {p: c for p, c in usable["all"]}
        split_path = run_dir / SPLIT_NAME if run_dir is not None else None
        if split_path is not None and split_path.is_file():
            train, val, gone, new = _load_split(split_path, disc.root, present)
            split_file = split_path
            if rank == 0 and (gone or new):
                log.warning(f"reusing {split_path}: {gone} listed files are gone or bad, {new} new files "
                            "are not in it and are left out (delete it to re-split)")
        else:
            groups = find_duplicates(p for p, _ in usable["all"])
            train, val = stratified_split(usable["all"], d.val_split, d.split_seed, keep_together=groups)
            if writer:
                payload = {"version": 1, "data": str(disc.root), "val_split": d.val_split,
                           "split_seed": d.split_seed, "classes": classes,
                           "train": [[_rel(p, disc.root), c] for p, c in train],
                           "val": [[_rel(p, disc.root), c] for p, c in val]}
                _atomic_write_text(split_path, json.dumps(payload, indent=0, ensure_ascii=False))
                split_file = split_path
        usable = {"train": train, "val": val}

    preproc = preprocessing or Preprocessing.from_config(cfg, default_input_size)
    idx = {c: i for i, c in enumerate(classes)}
    log_path = run_dir / BAD_FILES_NAME if run_dir is not None else None

    def make(split, transform, min_size):
        items = usable.get(split)
        if not items:
            return None
        return ImageDataset([(p, idx[c]) for p, c in items], classes, transform, log_path, min_size, preproc.channels)

    train_ds = make("train", train_transform(preproc, cfg.aug), max(preproc.input_size))
    if train_ds is None:
        raise DataError(f"no usable training image in {disc.root}")
    eval_tf = eval_transform(preproc)
    val_ds = make("val", eval_tf, preproc.min_decode_size)
    test_ds = make("test", eval_tf, preproc.min_decode_size)
    counts = {s: {c: sum(1 for _, x in items if x == c) for c in classes} for s, items in usable.items() if items}

    across, within, conflicts = duplicate_groups(usable)
    if conflicts and rank == 0:
        log.warning(f"{len(conflicts)} groups of identical files are filed under different classes "
                    f"(e.g. {' = '.join(str(p) for p in conflicts[0][:2])}): check their labels")
    if across and rank == 0:
        log.warning(f"{len(across)} groups of identical files are in both train and val/test "
                    f"(e.g. {' = '.join(str(p) for p in across[0][:2])}): validation accuracy is optimistic")
    return DataBundle(train_ds, val_ds, test_ds, classes, preproc, disc.layout, disc.root, counts, bad,
                      across, within, dict(disc.ignored), split_file, infos)


def _reasons(bad) -> str:
    return ", ".join(f"{n} {r}" for r, n in Counter(r.split(":")[0] for _, r in bad).most_common())


def duplicate_groups(usable: dict) -> tuple:
    """Byte-identical files in ``{split: [(path, class), ...]}``: groups spanning splits, groups
    inside one split, and groups whose files carry different class labels."""
    split_of = {p: s for s, items in usable.items() for p, _ in items}
    label_of = {p: c for items in usable.values() for p, c in items}
    groups = find_duplicates(split_of)
    across = [g for g in groups if len({split_of[p] for p in g}) > 1]
    within = [g for g in groups if len({split_of[p] for p in g}) == 1]
    conflicts = [g for g in groups if len({label_of[p] for p in g}) > 1]
    return across, within, conflicts
