"""The start-up scan: which files are usable images, and which files are exact duplicates.

The default check is fast: it reads the header (format, size, mode) and, for JPEG/PNG/GIF,
looks for the format's end marker; only a file without one is fully decoded to decide.
``verify=True`` fully decodes every file, strictly (``decode.verify_image``). Bad files are
written to ``RUN/bad_files.txt``: tab-separated ``path<TAB>reason`` rows, quoted as CSV does
(``csv.reader(f, delimiter="\t")`` reads them back) so a name holding a tab, a newline or a
quote stays one row; each path is listed once (``read_bad_files``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
import threading
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from PIL import Image, UnidentifiedImageError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: rows may repeat, never interleave
    fcntl = None

from .decode import ImageDecodeError, geometry_problem, image_problem, load_rgb, verify_image

BAD_FILES_NAME = "bad_files.txt"
# End markers: a file cut short (interrupted copy/download) lacks them.
_TRAILERS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND", "GIF": b"\x3b"}
_TAIL_BYTES = 4096  # some cameras append a few KB of vendor data after the JPEG end marker


@dataclass
class FileInfo:
    path: Path
    ok: bool
    reason: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    nbytes: int = 0


def _has_trailer(path: Path, fmt: str, nbytes: int) -> bool:
    marker = _TRAILERS.get(fmt)
    if marker is None:
        return True
    with open(path, "rb") as f:
        f.seek(max(0, nbytes - _TAIL_BYTES))
        return marker in f.read()


def check_image(path: Union[str, Path], verify: bool = False) -> FileInfo:
    """Classify one file as a usable image or not, with the reason."""
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except OSError as e:
        return FileInfo(path, False, f"cannot read: {e.strerror or e}")
    if nbytes == 0:
        return FileInfo(path, False, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                info = FileInfo(path, True, "", im.size[0], im.size[1], im.format or "", im.mode, nbytes)
                problem = image_problem(im)
    except Image.DecompressionBombError:
        return FileInfo(path, False, f"decompression bomb: more than {2 * Image.MAX_IMAGE_PIXELS} pixels", nbytes=nbytes)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        if path.suffix.lower() in (".tif", ".tiff"):  # multi-band TIFFs Pillow cannot open: tifffile can
            return _tiff_info(path, nbytes)
        if isinstance(e, UnidentifiedImageError):
            return FileInfo(path, False, "not an image (unrecognised content)", nbytes=nbytes)
        return FileInfo(path, False, f"unreadable header: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                        nbytes=nbytes)
    if problem:
        info.ok, info.reason = False, problem
        return info
    if verify or not _has_trailer(path, info.format, nbytes):
        try:
            verify_image(path) if verify else load_rgb(path)
        except ImageDecodeError as e:
            info.ok, info.reason = False, f"cannot decode: {e}"
    return info


def _tiff_info(path: Path, nbytes: int) -> FileInfo:
    from .channels import tiff_size

    try:
        w, h, bands = tiff_size(path)
    except ImageDecodeError as e:
        return FileInfo(path, False, str(e), nbytes=nbytes)
    problem = geometry_problem(w, h)
    return FileInfo(path, not problem, problem or "", w, h, "TIFF", f"{bands} bands", nbytes)


def scan_files(paths: Sequence[Path], verify: bool = False, threads: Optional[int] = None,
               progress: bool = False) -> List[FileInfo]:
    """``check_image`` over many files (threads: Pillow decodes without holding the GIL)."""
    threads = threads or min(8, (os.cpu_count() or 1) * 2)
    bar = None
    if progress and len(paths) > 2000 and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="scanning images", unit="img", leave=False)
    lock = threading.Lock()

    def one(p):
        r = check_image(p, verify)
        if bar is not None:
            with lock:
                bar.update()
        return r

    if threads <= 1 or len(paths) < 64:
        out = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(threads) as pool:
            out = list(pool.map(one, paths, chunksize=32))
    if bar is not None:
        bar.close()
    return out


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_duplicates(paths: Iterable[Path]) -> List[List[Path]]:
    """Groups (2+) of byte-identical files. Only files of equal size are hashed."""
    by_size = defaultdict(list)
    for p in paths:
        try:
            by_size[os.path.getsize(p)].append(Path(p))
        except OSError:
            pass
    groups = []
    for same in by_size.values():
        if len(same) < 2:
            continue
        by_hash = defaultdict(list)
        for p in same:
            try:
                by_hash[file_digest(p)].append(p)
            except OSError:
                pass
        groups.extend(sorted(g) for g in by_hash.values() if len(g) > 1)
    return sorted(groups)


def _rows(bad: Sequence[Tuple[Union[str, Path], str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerows((str(p), _one_line(r)) for p, r in bad)
    return buf.getvalue()


def read_bad_files(path: Union[str, Path]) -> List[Tuple[str, str]]:
    """The ``(path, reason)`` rows of a ``bad_files.txt``."""
    with open(path, newline="", encoding="utf-8") as f:
        return [(row[0], row[1] if len(row) > 1 else "") for row in csv.reader(f, delimiter="\t") if row]


def write_bad_files(run_dir: Union[str, Path], bad: Sequence[Tuple[Union[str, Path], str]]) -> Optional[Path]:
    """Write (overwrite) ``RUN/bad_files.txt``; nothing is written when there are none."""
    if not bad:
        return None
    out = Path(run_dir) / BAD_FILES_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_rows(bad), encoding="utf-8", newline="")
    return out


def append_bad_file(log: Union[str, Path], path: Union[str, Path], reason: str) -> bool:
    """Append a row unless ``path`` is listed already; True when it was added (its first report).

    An exclusive lock around read-and-append keeps the list to one row per file across the
    DataLoader workers of every epoch and evaluation (each a fresh process with its own memory)."""
    fd = os.open(str(log), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    with open(fd, "r+", encoding="utf-8", newline="") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        listed = {row[0] for row in csv.reader(f, delimiter="\t") if row}
        if str(path) in listed:
            return False
        f.write(_rows([(path, reason)]))
    return True


def _one_line(s: str) -> str:
    return " ".join(str(s).split())
