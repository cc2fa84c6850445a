"""Decoding one image file into an RGB PIL image, whatever it was saved as.

Handles EXIF orientation, grayscale/palette/CMYK, transparency (composited onto a white
background so a transparent logo does not turn black), 16-bit and float images, and uses
JPEG draft mode (DCT-domain downscaling by 1/2, 1/4, 1/8) when the file is much larger than
what the transform needs -- the main cost of large phone photos.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

# The same default as Pillow (about 89.5 MP); above it an image is treated as a decompression
# bomb and refused, instead of Pillow warning once and then decoding gigabytes.
MAX_PIXELS = 89_478_485
# Longest side over shortest side. Every pipeline scales the short side to the model's size, so
# the work per image grows with this ratio: a 521-byte 150000x1 PNG became a 22-megapixel eval
# resize (4.5 GB). 100:1 keeps the worst image within ~100x a square one and passes panoramas.
MAX_ASPECT_RATIO = 100
# Bytes of decoded pixel data, whatever the bit depth: as much as an 8-bit RGB image at MAX_PIXELS
# takes. A 16-bit or float image of few pixels by the bound above decodes to 2-4x the bytes of an
# 8-bit one (a 270 KB 16-bit TIFF made `fvt predict` peak at 3.6 GB); this keeps every image within
# the memory of the largest ordinary photo fvt accepts.
MAX_DECODED_BYTES = 3 * MAX_PIXELS
BACKGROUND = (255, 255, 255)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageDecodeError(Exception):
    """A file that cannot be turned into an RGB image (the message says why)."""


def is_image_name(path: Union[str, Path]) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def geometry_problem(width: int, height: int) -> Optional[str]:
    """Why an image of this header size must not be decoded (None when it may): the one bound
    on the work per image that train, eval and predict share (they all decode through here)."""
    if width <= 0 or height <= 0:
        return "image has zero width or height"
    if width * height > MAX_PIXELS:
        return f"decompression bomb: {width}x{height} pixels exceeds {MAX_PIXELS}"
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"extreme aspect ratio: {width}x{height} is over {MAX_ASPECT_RATIO}:1 "
                f"(resizing its short side to the model's size would take unbounded memory)")
    return None


def decoded_bytes(im: Image.Image) -> int:
    """Bytes of the pixel data ``im`` decodes to (its header only is read): bands x bits of the stored
    samples, so a 16-bit RGB TIFF (shown by Pillow as 8-bit RGB) counts at 16 bits."""
    bits = {"1": 1, "I": 32, "F": 32}.get(im.mode, 16 if im.mode.startswith("I;16") else 8)
    raw = next((t[3] for t in getattr(im, "tile", None) or [] if len(t) > 3), None)
    raw = raw[0] if isinstance(raw, tuple) and raw else raw
    if isinstance(raw, str) and ";16" in raw:
        bits = max(bits, 16)
    return im.size[0] * im.size[1] * len(im.getbands()) * bits // 8


def image_problem(im: Image.Image) -> Optional[str]:
    """:func:`geometry_problem`, then the decoded-bytes bound: why ``im`` (opened, not yet decoded, or
    already in memory) must not be processed, or None."""
    problem = geometry_problem(*im.size)
    if problem:
        return problem
    n = decoded_bytes(im)
    if n > MAX_DECODED_BYTES:
        return (f"decoded size: {im.size[0]}x{im.size[1]} {im.mode} needs {n / 1e6:.0f} MB, over the "
                f"{MAX_DECODED_BYTES / 1e6:.0f} MB an image may take (high bit depth at a large size)")
    return None


def to_rgb(im: Image.Image, background: Tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_to_uint8(im)).convert("RGB")
    return im.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV


_ROWS_PER_BLOCK_PIXELS = 1 << 20  # converted a block of about a megapixel at a time


def _to_uint8(im: Image.Image) -> np.ndarray:
    # 16/32-bit integer or float grayscale: rescale by the range the values were stored in,
    # not by the image's own min/max (which would stretch contrast differently per image).
    # Block by block in float32: a whole-image float64 copy (and its temporaries) took 16-27 bytes
    # per pixel on top of the image.
    a = np.asarray(im)
    if im.mode == "F":
        peak = float(np.nanmax(a)) if a.size and not np.isnan(a).all() else 0.0
        top = 1.0 if peak <= 1.0 else 255.0
    elif im.mode.startswith("I;16"):
        top = 65535.0
    else:  # "I": 32-bit integers, usually 8- or 16-bit data widened by the decoder
        peak = float(a.max()) if a.size else 0.0
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    out = np.empty(a.shape, dtype=np.uint8)
    step = max(1, _ROWS_PER_BLOCK_PIXELS // max(1, a.shape[1] if a.ndim > 1 else 1))
    for r in range(0, a.shape[0], step):
        block = np.nan_to_num(a[r:r + step].astype(np.float32), nan=0.0, posinf=top, neginf=0.0)
        np.multiply(block, np.float32(255.0 / top), out=block)
        np.add(block, np.float32(0.5), out=block)
        np.clip(block, 0, 255, out=block)
        out[r:r + step] = block
    return out


# Pillow signals corrupt input with many exception types; all mean "unusable file".
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                  TypeError, IndexError, KeyError, ZeroDivisionError, MemoryError)


def _decode_error(e: Exception) -> "ImageDecodeError":
    """One line of Pillow's message (or the exception's type) as an ImageDecodeError."""
    return ImageDecodeError(str(e).splitlines()[0] if str(e) else type(e).__name__)


def load_rgb(path: Union[str, Path], min_size: Optional[int] = None,
             background: Tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Open ``path`` fully decoded as RGB with EXIF orientation applied.

    ``min_size``: the smallest short side the caller needs; a JPEG larger than twice that is
    decoded at a reduced scale (never below ``min_size``). Raises ``ImageDecodeError``.
    For a model of other than 3 channels: ``fvt.data.channels.load_image``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's bomb / EXIF warnings: checked below instead
            with Image.open(path) as im:
                w, h = im.size
                problem = image_problem(im)
                if problem:
                    raise ImageDecodeError(problem)
                if min_size and im.format in ("JPEG", "MPO") and min(w, h) >= 2 * min_size:
                    im.draft("RGB", (min_size, min_size))
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im, background)
    except _PILLOW_ERRORS as e:
        raise _decode_error(e) from None


def verify_image(path: Union[str, Path]) -> None:
    """Decode ``path`` completely and strictly, or raise ``ImageDecodeError``.

    Pillow fills a JPEG cut short with grey when the file still ends in an end marker (a forged
    or re-appended ``FFD9``): libjpeg reports that only as a warning. So a JPEG is also decoded
    by libjpeg-turbo through simplejpeg with ``strict=True`` (warnings are errors), and every
    image must decode, with truncated-image loading off, to the size its header announces."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set by some other library in this process
        raise ImageDecodeError("cannot verify: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                size, fmt = im.size, im.format
                problem = image_problem(im)
                if problem:
                    raise ImageDecodeError(problem)
                im.load()
                if im.size != size:
                    raise ImageDecodeError(f"decoded {im.size[0]}x{im.size[1]}, header says {size[0]}x{size[1]}")
        if fmt in ("JPEG", "MPO"):
            import simplejpeg

            with open(path, "rb") as f:
                pixels = simplejpeg.decode_jpeg(f.read(), strict=True)
            if pixels.shape[:2] != (size[1], size[0]):
                raise ImageDecodeError(f"decoded {pixels.shape[1]}x{pixels.shape[0]}, header says {size[0]}x{size[1]}")
    except _PILLOW_ERRORS as e:
        raise _decode_error(e) from None
