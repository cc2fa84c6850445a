"""``--cache ram|disk``: decode and resize every image once, keep its uint8 pixels for the whole run.

On a small CPU, decoding a JPEG and resizing it costs about as much as the augmentation after it,
and an uncached run pays it again every epoch. A cache holds, per dataset (train, val), every
image as an ``H x W x 3`` uint8 array in one flat file that every process memory-maps:

* ``ram``: the file lives in shared memory (``/dev/shm``), so DataLoader workers and the DDP ranks
  of one machine read the same pages; it is removed when the run ends (or, after a crash, by the
  next cached run on the machine);
* ``disk``: ``RUN/cache/`` in the run folder; a resumed run reuses it.

What is kept. Training images: decoded as the uncached pipeline decodes them, then shrunk (never
enlarged) so that the short side is at most ``ceil(T / sqrt(min scale))`` pixels, ``T`` the
largest training size and ``min scale`` the smallest random-resized-crop area (``--scale``). A crop
of area ``a >= min scale`` then still spans at least ``T`` cached pixels, so every crop is
downsampled to ``T`` as it would be from the original: the cache loses no detail the crop could
show. Augmentation (random-resized crop, flips, RandAugment ...) still runs every epoch, on the
cached pixels. Validation images: the eval transform's own resize (short side ``T / crop_pct``),
so evaluation on cached images is bit-identical to evaluation on the files.

Invalidation: each entry is keyed by the file's path, size and modification time, and the cache
by the preprocessing (sizes, interpolation, decode size, format version). A changed file is
decoded again, the other entries are copied; changed preprocessing rebuilds the cache.

Bound: ``--cache-max-gb`` (default: half of the free memory, or of the free disk). When the
cache would not fit, the training side is lowered towards ``T`` (said in the log: small crops
are then upsampled), then the validation cache is dropped; when even the training images at
``T`` do not fit, the run stops before any work with a ``DataError`` naming the sizes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import weakref
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import DataError, UsageError
from .decode import ImageDecodeError, load_rgb

CACHE_VERSION = 1
GB = 1e9
RAM_ROOT = Path("/dev/shm")
_RAM_PREFIX = "fvt-cache-"


# -- what one split keeps ----------------------------------------------------------------------
class ShortSideAtMost:
    """Shrink an image so that its short side is at most ``side`` pixels (never enlarge)."""

    def __init__(self, side: int, interpolation: str):
        self.side, self.interpolation = int(side), interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        if min(img.size) <= self.side:
            return img
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        return F.resize(img, self.side, InterpolationMode(self.interpolation))

    def __repr__(self) -> str:
        return f"ShortSideAtMost({self.side}, {self.interpolation})"


def eval_resize(transform) -> Optional[Callable]:
    """The leading resize op of an eval transform (timm's Resize / ResizeKeepRatio), or None."""
    ops = getattr(transform, "transforms", None) or []
    first = ops[0] if ops else None
    return first if type(first).__name__ in ("Resize", "ResizeKeepRatio") else None


def resized_short_side(w: int, h: int, side: int, enlarge: bool) -> Tuple[int, int]:
    """(w, h) after scaling the short side to ``side`` (torchvision's rounding)."""
    short, long = min(w, h), max(w, h)
    if short <= side and not enlarge:
        return w, h
    new_long = int(side * long / short)
    return (side, new_long) if w <= h else (new_long, side)


# -- the cache of one dataset --------------------------------------------------------------------
class ImageCache:
    """Every image of one dataset as uint8 pixels in one memory-mapped file.

    ``table[i] = (offset, height, width)``; a height of 0 marks a file that failed to decode
    (``errors[i]`` says why). Pickles without the mapping: each worker maps the file itself."""

    def __init__(self, pixels: Path, table: np.ndarray, errors: Dict[int, str]):
        self.pixels, self.table, self.errors = Path(pixels), table, errors
        self._mm = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def nbytes(self) -> int:
        return int((self.table[:, 1] * self.table[:, 2]).sum() * 3)

    def array(self, index: int) -> np.ndarray:
        off, h, w = (int(v) for v in self.table[index])
        if h == 0:
            raise ImageDecodeError(self.errors.get(index, "failed to decode while caching"))
        if self._mm is None:
            self._mm = np.memmap(self.pixels, dtype=np.uint8, mode="r") if self.pixels.stat().st_size else np.zeros(0, np.uint8)
        return self._mm[off:off + h * w * 3].reshape(h, w, 3)

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(np.array(self.array(index)))  # a copy: the transforms never touch the cache

    def __getstate__(self):
        return {"pixels": self.pixels, "table": self.table, "errors": self.errors, "_mm": None}


def _file_keys(paths: Sequence[Path]) -> List[list]:
    keys = []
    for p in paths:
        try:
            st = os.stat(p)
            keys.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            keys.append([str(p), -1, -1])
    return keys


def _read_meta(folder: Path, name: str, key: str) -> Optional[dict]:
    try:
        meta = json.loads((folder / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    pixels = folder / f"{name}.u8"
    if meta.get("key") != key or not pixels.is_file() or pixels.stat().st_size != meta.get("nbytes"):
        return None
    return meta


def _decode_one(task) -> Tuple[Optional[np.ndarray], str]:
    path, min_size, resize = task
    try:
        img = resize(load_rgb(path, min_size))
    except ImageDecodeError as e:
        return None, str(e)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)), ""


def _decoded(tasks: list, workers: int) -> Iterator[Tuple[Optional[np.ndarray], str]]:
    """Decode in ``workers`` processes (results in order), or in this process for 0-1 workers or few files."""
    if workers < 2 or len(tasks) < 64:
        yield from map(_decode_one, tasks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_decode_one, tasks, chunksize=16)


def build_cache(dataset, folder: Path, name: str, resize: Callable, key: str, workers: int = 0) -> Tuple[ImageCache, int, int]:
    """Build (or bring up to date) the cache ``folder/name.{u8,json}`` of ``dataset``; returns the
    cache, the images decoded and the entries reused. Written to temporary files, then renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    files = _file_keys(dataset.paths)
    old = _read_meta(folder, name, key)
    reuse = {}
    if old is not None:
        reuse = {tuple(f): (off, h, w, old["errors"].get(str(i))) for i, (f, (off, h, w))
                 in enumerate(zip(old["files"], old["table"]))}
    todo = [i for i, f in enumerate(files) if tuple(f) not in reuse]
    tasks = [(dataset.paths[i], dataset.min_decode_size, resize) for i in todo]
    table = np.zeros((len(files), 3), dtype=np.int64)
    errors: Dict[int, str] = {}
    tmp = folder / f".{name}.{os.getpid()}.u8.tmp"
    old_mm = np.memmap(folder / f"{name}.u8", dtype=np.uint8, mode="r") if reuse and old["nbytes"] else None
    try:
        with open(tmp, "wb") as out:
            fresh = _decoded(tasks, workers)
            offset = 0
            for i, f in enumerate(files):
                if tuple(f) in reuse:
                    o, h, w, err = reuse[tuple(f)]
                    arr = old_mm[o:o + h * w * 3] if h else None
                else:
                    arr, err = next(fresh)
                    h, w = arr.shape[:2] if arr is not None else (0, 0)
                if arr is None or h == 0:
                    errors[i] = err or "failed to decode while caching"
                    table[i] = (offset, 0, 0)
                    continue
                out.write(np.ascontiguousarray(arr).tobytes())
                table[i] = (offset, h, w)
                offset += h * w * 3
        del old_mm
        os.replace(tmp, folder / f"{name}.u8")
    finally:
        if tmp.exists():
            tmp.unlink()
    meta = {"version": CACHE_VERSION, "key": key, "nbytes": int(offset), "files": files,
            "table": table.tolist(), "errors": {str(i): e for i, e in errors.items()}}
    part = folder / f".{name}.{os.getpid()}.json.tmp"
    part.write_text(json.dumps(meta))
    os.replace(part, folder / f"{name}.json")
    return ImageCache(folder / f"{name}.u8", table, errors), len(todo), len(files) - len(todo)


def open_cache(folder: Path, name: str, key: str) -> Optional[ImageCache]:
    """The cache another process built (DDP ranks after the builder), or None if it is not there."""
    meta = _read_meta(folder, name, key)
    if meta is None:
        return None
    table = np.asarray(meta["table"], dtype=np.int64).reshape(-1, 3)
    return ImageCache(folder / f"{name}.u8", table, {int(i): e for i, e in meta["errors"].items()})


# -- the policy: what to cache where, within the bound --------------------------------------------
def cache_folder(mode: str, run_dir: Path) -> Path:
    if mode == "disk":
        return Path(run_dir) / "cache"
    root = RAM_ROOT if RAM_ROOT.is_dir() and os.access(RAM_ROOT, os.W_OK) else Path(tempfile.gettempdir())
    tag = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]  # the same on every rank
    return root / f"{_RAM_PREFIX}{tag}"


def available_bytes(mode: str, folder: Path) -> int:
    """Free memory (ram) or free space where the cache goes (disk)."""
    if mode == "ram":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    probe = folder
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _sweep_stale_ram_caches(root: Path) -> None:
    """Remove ram caches whose run was killed (their owner process is gone): they hold memory."""
    for d in root.glob(f"{_RAM_PREFIX}*"):
        try:
            pid = int((d / "owner").read_text().split()[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError, IndexError):
            continue


def _remove_if_owner(folder: str, pid: int) -> None:
    if os.getpid() == pid:  # never from a forked worker whose copy of the cache is collected
        shutil.rmtree(folder, ignore_errors=True)


def _estimate(sizes: Sequence[Tuple[int, int]], side: int, enlarge: bool) -> int:
    return sum(3 * math.prod(resized_short_side(w, h, side, enlarge)) for w, h in sizes)


def _fit(train_sizes, val_sizes, train_side: int, crop: int, val_side: Optional[int], limit: int):
    """(train side, cache val?) within ``limit`` bytes: lower the train side towards ``crop``, then
    drop the val cache; None when the training images do not fit even at ``crop``."""
    val_need = _estimate(val_sizes, val_side, True) if val_side else 0
    for with_val in ((True, False) if val_side else (False,)):
        room = limit - (val_need if with_val else 0)
        if _estimate(train_sizes, crop, False) > room:
            continue
        lo, hi = crop, train_side
        while lo < hi:  # the largest side that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if _estimate(train_sizes, mid, False) <= room else (lo, mid - 1)
        return lo, with_val
    return None


def attach_caches(bundle, mode: str, max_gb: Optional[float], run_dir: Path, train_side_needed: int,
                  min_scale: float, workers: int, builder: bool, barrier: Callable[[], None]) -> List[str]:
    """Cache the training (and validation) images of ``bundle`` and make its datasets read them.
    Only the ``builder`` (one process per machine) decodes; the others wait at ``barrier`` and map
    the result. Returns the lines for the run log."""
    from .dataset import ImageDataset

    if not isinstance(bundle.train, ImageDataset):
        raise UsageError(f"--cache {mode} works with image folders and CSV files; shards are streamed, not cached")
    folder = cache_folder(mode, run_dir)
    limit = int(max_gb * GB) if max_gb else available_bytes(mode, folder) // 2
    dims = {Path(i.path): (i.width, i.height) for i in (bundle.infos or []) if i.width and i.height}
    crop = int(train_side_needed)
    side = max(crop, math.ceil(crop / math.sqrt(max(min_scale, 1e-6))))
    val = bundle.val if isinstance(bundle.val, ImageDataset) else None
    val_op = eval_resize(val.transform) if val is not None else None
    val_side = max(bundle.preprocessing.input_size) / bundle.preprocessing.crop_pct if val_op else None
    train_dims = [dims.get(p, (side, side)) for p in bundle.train.paths]
    val_dims = [dims.get(p, (crop, crop)) for p in val.paths] if val_op else []
    fit = _fit(train_dims, val_dims, side, crop, math.floor(val_side) if val_side else None, limit)
    if fit is None:
        need = _estimate(train_dims, crop, False) / GB
        raise DataError(f"--cache {mode}: the {len(train_dims):,} training images need {need:.2f} GB even at the "
                        f"training size {crop} px, more than the {limit / GB:.2f} GB allowed; raise --cache-max-gb, "
                        f"use --cache {'disk' if mode == 'ram' else 'ram'}, or leave --cache off")
    lines = []
    if fit[0] < side:
        lines.append(f"cache: {side} px would exceed {limit / GB:.2f} GB; training images kept at {fit[0]} px short "
                     f"side (crops smaller than {(crop / fit[0]) ** 2:.2f} of an image are upsampled)")
    interp = bundle.preprocessing.interpolation
    jobs = [("train", bundle.train, ShortSideAtMost(fit[0], interp))]
    if fit[1]:
        jobs.append(("val", val, val_op))
    elif val_op is not None:
        lines.append("cache: validation images not cached (the bound leaves no room for them)")
    if builder:
        if mode == "ram":  # first: a cache this run folder left behind when it was killed goes too
            _sweep_stale_ram_caches(folder.parent)
        folder.mkdir(parents=True, exist_ok=True)
        if mode == "ram":
            (folder / "owner").write_text(f"{os.getpid()}\n")
    caches = {}
    for name, ds, op in jobs:
        key = f"fvt-cache v{CACHE_VERSION} {name} {op!r} decode>={ds.min_decode_size}"
        if builder:
            caches[name], decoded, reused = build_cache(ds, folder, name, op, key, workers)
            lines.append(f"cache: {name} {len(ds):,} images, {caches[name].nbytes / GB:.2f} GB "
                         f"({decoded:,} decoded, {reused:,} reused) by {op!r} in {folder}")
    barrier()
    for name, ds, op in jobs:
        cache = caches.get(name) or open_cache(folder, name, f"fvt-cache v{CACHE_VERSION} {name} {op!r} "
                                                            f"decode>={ds.min_decode_size}")
        if cache is None:
            raise DataError(f"--cache {mode}: {folder} holds no {name} cache after the builder process made it; "
                            "is the folder shared by the processes of this machine?")
        ds.cache = cache
    if builder and mode == "ram":
        bundle.cache_finalizer = weakref.finalize(bundle, _remove_if_owner, str(folder), os.getpid())
    return lines


def release_caches(bundle) -> None:
    """Free a ram cache now (the run ended); a disk cache stays in the run folder."""
    fin = getattr(bundle, "cache_finalizer", None)
    if fin is not None:
        fin()
