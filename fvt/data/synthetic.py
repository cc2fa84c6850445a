"""Small synthetic image folders, written at run time (tests, demos, benchmarks).

``write_odd_images`` writes one file of every awkward kind fvt must read (grayscale,
palette GIF with transparency, RGBA, LA, CMYK, 16-bit, EXIF-rotated, upper-case extension,
names with spaces and non-ASCII); ``write_bad_files`` writes one of each bad kind (empty,
truncated JPEG/PNG, text named .jpg, a decompression-bomb-sized PNG header).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 30), (160, 40, 200), (30, 200, 200)]


def solid(color: Tuple[int, int, int], size=(24, 24), noise: int = 0, seed: int = 0) -> Image.Image:
    a = np.empty((size[1], size[0], 3), np.uint8)
    a[...] = color
    if noise:
        rng = np.random.default_rng(seed)
        a = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def make_class_folder(root: Path, counts: Dict[str, int], size=(24, 24), ext: str = ".png",
                      seed: int = 0) -> Dict[str, list]:
    """``root/<class>/<i>.png`` with distinct (noisy) images of one colour per class."""
    out = {}
    for k, (name, n) in enumerate(sorted(counts.items())):
        d = Path(root) / name
        d.mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(n):
            p = d / f"{i:04d}{ext}"
            solid(COLORS[k % len(COLORS)], size, noise=20, seed=seed * 1_000_000 + k * 10_000 + i).save(p)
            out[name].append(p)
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` (a decompression bomb's signature)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                           + _chunk(b"IEND", b""))
    return Path(path)


def png_rgb48(path: Path, rgb16: Tuple[int, int, int], size=(20, 16)) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one, so it is assembled by hand)."""
    w, h = size
    px = np.empty((h, w, 3), ">u2")
    px[...] = rgb16
    raw = b"".join(b"\0" + px[r].tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
                           + _chunk(b"IEND", b""))
    return Path(path)


def write_bad_files(folder: Path) -> Dict[str, Path]:
    """One file of each bad kind, keyed by kind."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"empty": folder / "empty.jpg", "text": folder / "notes.jpg", "truncated_jpeg": folder / "cut.jpg",
           "truncated_png": folder / "cut.png", "bomb": folder / "bomb.png"}
    out["empty"].write_bytes(b"")
    out["text"].write_text("this is not an image\n")
    big = solid((90, 120, 150), (256, 256), noise=60)
    big.save(folder / "_full.jpg", quality=90)
    data = (folder / "_full.jpg").read_bytes()
    out["truncated_jpeg"].write_bytes(data[: len(data) // 2])
    big.save(folder / "_full.png")
    data = (folder / "_full.png").read_bytes()
    out["truncated_png"].write_bytes(data[: len(data) // 2])
    (folder / "_full.jpg").unlink()
    (folder / "_full.png").unlink()
    png_header_only(out["bomb"], 20_000, 20_000)
    return out


def write_odd_images(folder: Path) -> Dict[str, Tuple[Path, Tuple[int, int, int], Tuple[int, int]]]:
    """Awkward but valid images: kind -> (path, expected RGB at the centre, expected (w, h))."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    g = Image.new("L", (20, 16), 77)
    g.save(folder / "gray.png")
    out["gray"] = (folder / "gray.png", (77, 77, 77), (20, 16))
    pal = Image.new("P", (20, 16), 1)
    pal.putpalette([0, 0, 0, 200, 30, 60] + [0] * 762)
    pal.save(folder / "palette.GIF")
    out["palette_gif"] = (folder / "palette.GIF", (200, 30, 60), (20, 16))
    rgba = Image.new("RGBA", (20, 16), (10, 20, 30, 0))  # fully transparent -> background (white)
    rgba.save(folder / "transparent rgba.png")
    out["rgba"] = (folder / "transparent rgba.png", (255, 255, 255), (20, 16))
    la = Image.new("LA", (20, 16), (0, 255))  # opaque black
    la.save(folder / "la.png")
    out["la"] = (folder / "la.png", (0, 0, 0), (20, 16))
    cmyk = Image.new("CMYK", (20, 16), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(folder / "cmyk.jpg", quality=100)
    out["cmyk"] = (folder / "cmyk.jpg", (255, 0, 0), (20, 16))
    i16 = Image.fromarray(np.full((16, 20), 40000, np.uint16))
    i16.save(folder / "deep16.png")
    out["16bit"] = (folder / "deep16.png", (round(40000 / 257),) * 3, (20, 16))
    png_rgb48(folder / "deep48.png", (65535, 32768, 0))
    out["48bit"] = (folder / "deep48.png", (255, 128, 0), (20, 16))
    # EXIF orientation 6 (rotate 90 CW to display): stored 40x20 -> shown 20x40.
    rot = Image.new("RGB", (40, 20), (0, 0, 255))
    rot.paste((255, 0, 0), (0, 0, 20, 20))  # left half red in storage -> top half after rotation
    exif = Image.Exif()
    exif[0x0112] = 6
    rot.save(folder / "rotated.JPEG", exif=exif.tobytes(), quality=100)
    out["exif"] = (folder / "rotated.JPEG", None, (20, 40))
    for name, fmt in (("bitmap.bmp", "BMP"), ("scan.TIF", "TIFF"), ("web.webp", "WEBP"), ("café ünï 写真.jpg", "JPEG")):
        Image.new("RGB", (20, 16), (30, 140, 90)).save(folder / name, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        out[name] = (folder / name, (30, 140, 90), (20, 16))
    return out


def write_presplit(root: Path, counts: Dict[str, int], splits: Sequence[str] = ("train", "val")) -> None:
    for k, s in enumerate(splits):
        make_class_folder(Path(root) / s, counts, seed=k + 1)
