"""Images with other than three channels: grayscale (``--in-chans 1``) and multi-band (``--in-chans N``).

* 1 channel: every image is decoded as usual (EXIF, palette, 16-bit ...) and converted to 8-bit
  grayscale ('L'); a gray file stays exactly as stored, a colour photo becomes its luminance.
* N channels (2, 4, 5, ...): the bands are used as stored. A TIFF is read by ``tifffile`` (any
  band count, 8/16-bit integers or floats; the samples axis may come first or last); any other
  file by Pillow (e.g. a 4-band RGBA PNG). Integers are scaled by their type's range to 0..1,
  floats are taken as they are (store them in about 0..1). An image whose band count differs
  from N is a bad file (listed in bad_files.txt with the counts), never padded or cut silently.
  The decoded image is a float tensor (N, H, W): torchvision's resize/crop/flip and timm's
  normalise and random erasing run on it; RandAugment and colour jitter (RGB operations) do not.

Normalisation: ``mean`` / ``std`` have one value per channel. The 3-value ImageNet default
becomes ImageNet's mean of means (0.449 / 0.226) for every channel, which matches a pretrained
stem adapted by ``timm.models.adapt_input_conv`` (channel weights summed for 1, repeated and
rescaled for N).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .channel_stats import GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, channel_stats, stats_problem  # noqa: F401
from .decode import BACKGROUND, _PILLOW_ERRORS, ImageDecodeError, _decode_error, geometry_problem, load_rgb, to_rgb

TIFF_SUFFIXES = (".tif", ".tiff")


def to_channels(im: Image.Image, channels: int, background=(255, 255, 255)):
    """A decoded PIL image as the model's channels: 'RGB' (3), 'L' (1), else a float tensor (N, H, W)."""
    if channels == 3:
        return to_rgb(im, background)
    if channels == 1:
        return to_rgb(im, background).convert("L")
    bands = len(im.getbands())
    if bands != channels:
        raise ImageDecodeError(f"{bands} channel(s) ({im.mode}); the model takes {channels}")
    return bands_tensor(np.asarray(im), im.mode)


def bands_tensor(a: np.ndarray, mode: str = "") -> torch.Tensor:
    """(H, W[, C]) integers or floats -> float32 tensor (C, H, W); integers scaled by their type's range."""
    if a.ndim == 2:
        a = a[..., None]
    if mode.startswith("I;16"):
        a = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(a.astype(np.float32), 0, None) / float(np.iinfo(a.dtype).max)
    elif a.dtype == np.bool_:
        a = a.astype(np.float32)
    else:
        a = np.nan_to_num(a.astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def _tiff_layout(shape: Sequence[int], axes: str) -> Tuple[int, int, int, Optional[int]]:
    """(height, width, bands, band axis) of a TIFF series; a stack of more than one plane of bands is refused."""
    keep = [(n, a) for n, a in zip(shape, axes) if n != 1 or a in "YX"]
    if "Y" not in axes or "X" not in axes or len(keep) > 3:
        raise ImageDecodeError(f"TIFF of shape {tuple(shape)} (axes {axes}): expected one image of bands "
                               f"(height, width[, bands])")
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    other = [i for i, (n, a) in enumerate(zip(shape, axes)) if a not in "YX" and n != 1]
    return h, w, (shape[other[0]] if other else 1), (other[0] if other else None)


def tiff_size(path: Union[str, Path]) -> Tuple[int, int, int]:
    """(width, height, bands) from a TIFF's header, without reading its pixels."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            h, w, bands, _ = _tiff_layout(series.shape, series.axes)
    except ImageDecodeError:
        raise
    except Exception as e:  # tifffile raises its own types for a file it cannot parse
        raise ImageDecodeError(f"unreadable TIFF: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return w, h, bands


def _read_tiff(path: Union[str, Path], channels: int) -> torch.Tensor:
    import tifffile

    w, h, bands = tiff_size(path)
    problem = geometry_problem(w, h)
    if problem:
        raise ImageDecodeError(problem)
    if bands != channels:
        raise ImageDecodeError(f"{bands} channel(s) (TIFF); the model takes {channels}")
    try:
        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            a = series.asarray()
            axes = series.axes
    except Exception as e:
        raise ImageDecodeError(f"unreadable TIFF: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    _, _, _, band_axis = _tiff_layout(a.shape, axes)
    order = [axes.index("Y"), axes.index("X")] + ([band_axis] if band_axis is not None else [])
    a = a.transpose(order + [i for i in range(a.ndim) if i not in order]).reshape(h, w, -1)
    return bands_tensor(a)


def load_image(path: Union[str, Path], min_size: Optional[int] = None,
               background: Tuple[int, int, int] = BACKGROUND, channels: int = 3):
    """Open ``path`` for a model of ``channels`` input channels, EXIF orientation applied: RGB for 3
    (``fvt.data.decode.load_rgb``), else grayscale or the stored bands (see the module doc).

    ``min_size``: the smallest short side the caller needs (a large JPEG is decoded at a reduced scale).
    Raises ``ImageDecodeError``."""
    if channels == 3:
        return load_rgb(path, min_size, background)
    return load_channels(path, channels, min_size, background)


def load_channels(path, channels: int, min_size: Optional[int] = None, background=(255, 255, 255)):
    """Decode ``path`` for a model of ``channels`` channels (see the module doc); raises ImageDecodeError."""
    if channels == 1:
        return load_rgb(path, min_size, background).convert("L")
    if isinstance(path, (str, Path)) and str(path).lower().endswith(TIFF_SUFFIXES):
        return _read_tiff(path, channels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                problem = geometry_problem(*im.size)
                if problem:
                    raise ImageDecodeError(problem)
                im.load()
                return to_channels(ImageOps.exif_transpose(im), channels, background)
    except _PILLOW_ERRORS as e:
        raise _decode_error(e) from None


def channel_images(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) de-normalised floats -> something imshow draws: gray for 1 channel, the first 3 bands for more."""
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    return x[..., :3] if x.shape[-1] >= 3 else np.concatenate([x, x[..., :1]], axis=-1)
