"""What the audit looks at: every labelled image of the data, in one list, whatever the layout.

Folders, pre-split folders and CSV files come through ``fvt.data.build_data`` (the same scan,
bad-file exclusion and train/val split as ``fvt train``; an existing run's ``split.json`` is
reused). Shards written by ``fvt data shard`` are read in place: their tar files are indexed
once (``tarfile`` member offsets), so each image is read by seeking to it, never unpacked to disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.dataset import ImageDataset
from ..errors import DataError, UsageError

SPLITS = ("train", "val", "test")


@dataclass
class AuditData:
    dataset: ImageDataset            # every image, in order (``load(i)`` decodes item i)
    labels: np.ndarray               # class index per item
    splits: List[str]                # train / val / test per item
    names: List[str]                 # path as shown and written to audit.csv (relative to the data root)
    files: List[Optional[str]]       # absolute file path to link to (None inside shards)
    classes: List[str]
    root: Path
    layout: str
    counts: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def _rel(p: Path, root: Path) -> str:
    try:
        return Path(os.path.abspath(p)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(p)


def from_bundle(bundle, min_decode_size: Optional[int]) -> AuditData:
    """Folders / CSV: the bundle's train, val and test sets concatenated."""
    samples, splits = [], []
    for split in SPLITS:
        ds = getattr(bundle, split)
        if ds is not None:
            samples += list(ds.samples)
            splits += [split] * len(ds.samples)
    dataset = ImageDataset(samples, bundle.classes, None, None, min_decode_size)
    return AuditData(dataset, np.array([t for _, t in samples], dtype=np.int64), splits,
                     [_rel(p, bundle.root) for p, _ in samples], [os.path.abspath(p) for p, _ in samples],
                     list(bundle.classes), Path(bundle.root), bundle.layout, dict(bundle.counts))


class TarMembers(ImageDataset):
    """Images inside local tar shards, read by offset. ``samples`` hold (shown name, class index)."""

    def __init__(self, members: Sequence[Tuple[str, int, int]], names: Sequence[str], targets: Sequence[int],
                 classes: Sequence[str], min_decode_size: Optional[int] = None):
        super().__init__(list(zip(names, targets)), classes, None, None, min_decode_size)
        self.members = list(members)  # (tar file, data offset, size)

    def read_bytes(self, index: int) -> bytes:
        tar, offset, size = self.members[index]
        with open(tar, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def load(self, index: int):
        from ..data.decode import load_rgb

        return load_rgb(io.BytesIO(self.read_bytes(index)), self.min_decode_size)

    def content_digest(self, index: int) -> str:
        return hashlib.blake2b(self.read_bytes(index), digest_size=16).hexdigest()


def _index_tar(path: Path) -> List[tuple]:
    """(key, image offset, image size, class index, original path) per sample of one shard."""
    found: Dict[str, dict] = {}
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            if not m.isfile() or "." not in m.name:
                continue
            key, ext = m.name.split(".", 1)
            entry = found.setdefault(key, {})
            if ext == "cls":
                entry["cls"] = int(tf.extractfile(m).read().decode().strip())
            elif ext == "path.txt":
                entry["path"] = tf.extractfile(m).read().decode("utf-8", "replace").strip()
            elif not ext.startswith("_"):
                entry["image"] = (m.offset_data, m.size)
    return [(k, *e["image"], e["cls"], e.get("path") or f"{path.name}#{k}")
            for k, e in sorted(found.items()) if "image" in e and "cls" in e]


def from_shards(spec: str, min_decode_size: Optional[int]) -> AuditData:
    """Every split of a local shard folder written by ``fvt data shard``."""
    from ..data.shard_source import ShardSource

    source = ShardSource(spec)
    members, names, targets, splits = [], [], [], []
    for split in SPLITS:
        part = source.split(split, filtered=False)
        for url in (part or {}).get("urls", []):
            path = Path(url)
            if not path.is_file():
                raise UsageError(f"fvt data audit reads local shard files; {url} is not one (copy the shards "
                                 f"to a local folder first)")
            for _key, off, size, cls, name in _index_tar(path):
                members.append((str(path), off, size))
                names.append(name)
                targets.append(cls)
                splits.append(split)
    if not members:
        raise DataError(f"{spec}: the shards hold no labelled image")
    classes = list(source.classes)
    counts = {s: {c: sum(1 for t, x in zip(targets, splits) if x == s and t == i) for i, c in enumerate(classes)}
              for s in SPLITS if s in splits}
    dataset = TarMembers(members, names, targets, classes, min_decode_size)
    return AuditData(dataset, np.array(targets, dtype=np.int64), splits, names, [None] * len(names), classes,
                     Path(source.spec), "shards", counts)


def load_audit_data(cfg, run_dir: Optional[Path], preprocessing) -> AuditData:
    """The audited images of ``cfg.data`` (a ``fvt.config.Config``), split as ``fvt train`` splits them."""
    from ..data import build_data
    from ..data.shard_source import is_shard_spec

    if is_shard_spec(cfg.data.data):
        build_data(cfg, None, preprocessing=preprocessing, write=False)  # the same checks as training
        return from_shards(str(cfg.data.data), preprocessing.min_decode_size)
    bundle = build_data(cfg, run_dir, preprocessing=preprocessing, write=False)
    return from_bundle(bundle, preprocessing.min_decode_size)
