"""``fvt data shard``: any layout fvt reads -> WebDataset tar shards plus ``index.json``.

The files, classes, bad files and train/val split come from ``build_data`` -- the same
discovery, scan and stratified split (``--val-split``, ``--split-seed``) as ``fvt train`` --
so a run on the shards sees exactly the images a run on the folder would.

Output folder::

    index.json           classes, counts per split / class / shard, sha256 and size of each shard
    train-000000.tar     samples NNNNNNNN.<ext> (the image bytes as stored, or re-encoded
    ...                  when --max-size asks), NNNNNNNN.cls (class index), NNNNNNNN.path.txt
    val-000000.tar       (the path relative to the source); NNNNNNNN = index within the split
    train.paths.txt      one original path per sample, in sample order (for eval reports)
    bad_files.txt        files left out, ``path<TAB>reason`` as fvt train writes it

Idempotent: tar headers carry a fixed mtime/owner/mode and the sample order is a pure
function of the file list and ``--split-seed``, so the same input gives byte-identical
shards. When ``index.json`` already describes the same input and options and every shard is
present with its recorded size, nothing is rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UsageError
from .multilabel import encode_target
from .scan import write_bad_files

INDEX_NAME = "index.json"
FORMAT = "fvt-shards"
VERSION = 1
SPLITS = ("train", "val", "test")
SHARD_MTIME = 0  # fixed tar header time: same input -> same bytes
JPEG_QUALITY = 95
INSTALL_HINT = "webdataset is not installed: pip install 'fastervit-toolkit[shards]' (or pip install webdataset)"


def require_webdataset():
    try:
        import webdataset
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return webdataset


def parse_size(text: str) -> int:
    """'256MB', '1.5GB', '500k', '1000000' -> bytes (powers of 1000, as tools report file sizes)."""
    s = str(text).strip().upper().removesuffix("B")
    scale = {"K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12}.get(s[-1:] if s else "", 1)
    try:
        value = float(s[:-1] if scale > 1 else s) * scale
    except ValueError:
        raise UsageError(f"--shard-size {text!r} is not a size; use e.g. 256MB, 1GB or a byte count") from None
    if value < 1:
        raise UsageError(f"--shard-size {text!r} must be positive")
    return int(value)


def _sample_bytes(path: Path, max_size: Optional[int]) -> Tuple[bytes, str]:
    """The file's bytes and extension; re-encoded only when its longer side exceeds ``max_size``."""
    data = path.read_bytes()
    ext = path.suffix.lower().lstrip(".") or "img"
    if not max_size:
        return data, ext
    from PIL import Image

    from .decode import load_rgb

    with Image.open(io.BytesIO(data)) as im:
        w, h, fmt = im.width, im.height, im.format
    if max(w, h) <= max_size:
        return data, ext
    img = load_rgb(io.BytesIO(data))  # RGB, EXIF orientation applied: what training decodes
    scale = max_size / max(w, h)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC)
    out = io.BytesIO()
    if fmt in ("JPEG", "MPO"):
        img.save(out, "JPEG", quality=JPEG_QUALITY)
        return out.getvalue(), "jpg"
    img.save(out, "PNG")  # lossless for everything that was not a JPEG
    return out.getvalue(), "png"


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _fingerprint(splits: Dict[str, list], root: Path, classes: Sequence[str], options: dict,
                 bad: Sequence[Tuple[Path, str]]) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, "version": VERSION, "options": options,
                                   "classes": list(classes)}, sort_keys=True).encode())
    for split, items in splits.items():
        for p, c in items:
            st = p.stat()
            h.update(f"{split}\t{_rel(p, root)}\t{c}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    for p, reason in bad:
        h.update(f"bad\t{p}\t{reason}\n".encode())
    return h.hexdigest()


def _up_to_date(out: Path, fingerprint: str) -> Optional[dict]:
    try:
        index = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if index.get("fingerprint") != fingerprint:
        return None
    for split in index.get("splits", {}).values():
        for s in split["shards"]:
            f = out / s["name"]
            if not f.is_file() or f.stat().st_size != s["bytes"]:
                return None
    return index


def _write_split(wds, out: Path, split: str, items: List[Tuple[Path, int]], classes: Sequence[str], root: Path,
                 shard_bytes: int, max_size: Optional[int], progress) -> dict:
    """Write one split's shards (``split-NNNNNN.tar``); returns its index entry."""
    shards: List[dict] = []
    state: dict = {}

    def close():
        if not state:
            return
        state["writer"].close()
        state["file"].close()
        tmp, final = state["tmp"], out / state["name"]
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        os.replace(tmp, final)
        shards.append({"name": state["name"], "count": state["count"], "bytes": final.stat().st_size,
                       "sha256": digest.hexdigest(), "counts": {c: n for c, n in zip(classes, state["per"]) if n}})
        state.clear()

    def open_next():
        name = f"{split}-{len(shards):06d}.tar"
        tmp = out / f".{name}.{os.getpid()}.tmp"
        f = open(tmp, "wb")
        state.update(name=name, tmp=tmp, file=f, count=0, bytes=0, per=[0] * len(classes),
                     writer=wds.TarWriter(f, user="fvt", group="fvt", mtime=SHARD_MTIME))

    lines = []
    try:
        for i, (path, target) in enumerate(items):
            data, ext = _sample_bytes(path, max_size)
            size = len(data) + 3 * 512 + 1024  # tar headers and padding, about
            if state and state["count"] and state["bytes"] + size > shard_bytes:
                close()
            if not state:
                open_next()
            rel = _rel(path, root)
            labels = target if isinstance(target, tuple) else (target,)  # multi-label: a tuple of label indices
            cls = encode_target(target) if isinstance(target, tuple) else str(target)
            state["writer"].write({"__key__": f"{i:08d}", ext: data, "cls": cls, "path.txt": rel})
            state["count"] += 1
            state["bytes"] += size
            for t in labels:
                state["per"][t] += 1
            lines.append(rel)
            progress(1)
        close()
    finally:
        if state:  # interrupted: leave no half-written shard behind
            state["file"].close()
            state["tmp"].unlink(missing_ok=True)
    (out / f"{split}.paths.txt").write_text("".join(f"{p}\n" for p in lines), encoding="utf-8")
    counts = {c: sum(s["counts"].get(c, 0) for s in shards) for c in classes}
    return {"count": len(items), "counts": counts, "shards": shards, "paths": f"{split}.paths.txt"}


def write_shards(src: str, output: str, shard_size: str = "256MB", val_split: float = 0.2, split_seed: int = 42,
                 val_data: Optional[str] = None, max_size: Optional[int] = None, verify: bool = False,
                 force: bool = False, echo=print, task: str = "auto") -> dict:
    """Shard ``src`` into ``output``; returns the index (also written to ``output/index.json``).
    ``task``: auto|multiclass|multilabel, as ``fvt train --task`` (multi-label CSVs keep their label sets)."""
    wds = require_webdataset()
    from ..config import Config
    from .multilabel_build import build_multilabel_data, resolve_task
    from .pipeline import build_folder_data

    shard_bytes = parse_size(shard_size)
    if max_size is not None and max_size < 8:
        raise UsageError(f"--max-size {max_size}: give the longest image side in pixels (e.g. 512), or leave it out")
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} is a file; give a folder for the shards")
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX_NAME).is_file():
        raise UsageError(f"--output {out} is not empty and holds no {INDEX_NAME}; give an empty or new folder")
    cfg = Config()
    cfg.data.data, cfg.data.val_data, cfg.data.val_split, cfg.data.split_seed = src, val_data, val_split, split_seed
    cfg.data.verify_images = verify
    cfg.data.task = resolve_task(task, src, val_data)
    build = build_multilabel_data if cfg.data.task == "multilabel" else build_folder_data
    bundle = build(cfg, None, default_input_size=(224, 224), write=False)
    sets = {s: getattr(bundle, s) for s in SPLITS if getattr(bundle, s) is not None}
    classes = bundle.classes
    named = {s: [(p, ";".join(classes[i] for i in t) if isinstance(t, tuple) else classes[t]) for p, t in ds.samples]
             for s, ds in sets.items()}
    options = {"task": cfg.data.task, "val_split": val_split if bundle.layout != "presplit" and not val_data else None,
               "split_seed": split_seed, "max_size": max_size, "shard_size": shard_bytes}
    fingerprint = _fingerprint(named, bundle.root, classes, options, bundle.bad_files)
    if not force:
        index = _up_to_date(out, fingerprint)
        if index is not None:
            echo(f"up to date: {out / INDEX_NAME} matches {src} (same files, options); nothing rewritten")
            return index

    out.mkdir(parents=True, exist_ok=True)
    if write_bad_files(out, bundle.bad_files) is None:
        (out / "bad_files.txt").unlink(missing_ok=True)  # a list from an earlier run would be stale
    total = sum(len(ds) for ds in sets.values())
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="sharding", unit="img", disable=None, file=sys.stderr)
    splits = {}
    try:
        for split, ds in sets.items():
            items = list(ds.samples)
            if split == "train":  # shards of one class each would defeat the shuffle buffer
                random.Random(f"{split_seed}:shards").shuffle(items)
            splits[split] = _write_split(wds, out, split, items, classes, bundle.root, shard_bytes, max_size,
                                         bar.update)
    finally:
        bar.close()
    keep = {s["name"] for v in splits.values() for s in v["shards"]}
    for old in out.glob("*.tar"):  # shards of an earlier, larger run of this command
        if old.name not in keep and old.name.split("-")[0] in SPLITS:
            old.unlink()
    index = {"format": FORMAT, "version": VERSION, "source": str(bundle.root), "layout": bundle.layout,
             "classes": list(classes), **options, "fingerprint": fingerprint,
             "bad_files": len(bundle.bad_files), "splits": splits}
    tmp = out / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / INDEX_NAME)  # last: an interrupted run never leaves a matching index
    for s, v in splits.items():
        echo(f"{s}: {v['count']} images in {len(v['shards'])} shard(s) "
             f"({sum(x['bytes'] for x in v['shards']) / 1e6:.1f} MB)")
    if bundle.bad_files:
        echo(f"bad files: {len(bundle.bad_files)} left out, listed in {out / 'bad_files.txt'}")
    echo(f"index: {out / INDEX_NAME}")
    return index
