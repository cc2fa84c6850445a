"""Per-stage window / carrier-token planning for a given input size.

Policy (when windows are not given):
* at the variant's default input size, the official window sizes;
* any-resolution variants (``pad_to_window``) keep the official windows and pad each
  attention stage's feature map up to a multiple of the window, as the reference does;
* otherwise the number of windows per side of the default size is kept (a window covers
  the same fraction of the image, as the official 21k 384/512/768 models do), choosing
  the square window that divides the feature map, is at least min(4, map side) and is
  closest (log scale) to that target. If no such window exists the size is refused
  with the nearest sizes that work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import UsageError


@dataclass(frozen=True)
class StagePlan:
    img_size: tuple  # (H, W) of the model input
    feat: tuple  # (h, w) feature map entering the stage's blocks
    window: int
    padded: tuple  # feature map after padding to a multiple of the window
    sr: tuple  # windows per side (carrier-token grid / ct_size); (1, 1) without HAT
    ct_size: int
    tokenizer: bool  # whether the stage has a carrier-token initializer


def to_hw(size) -> tuple:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) == 3:  # (C, H, W)
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise UsageError(f"img_size must be N or (H, W) with positive sizes; got {size}")
    return size


def feature_sizes(hw: tuple, n: int) -> list:
    """Feature map entering each stage: stride-4 stem, then stride-2 3x3 convs (pad 1)."""
    h, w = math.ceil(math.ceil(hw[0] / 2) / 2), math.ceil(math.ceil(hw[1] / 2) / 2)
    out = []
    for _ in range(n):
        out.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return out


def auto_window(feat: tuple, windows_per_side: int) -> Optional[int]:
    """The square window dividing both sides, >= min(4, side), closest to the target."""
    fh, fw = feat
    lo = min(4, fh, fw)
    cands = [w for w in range(lo, min(fh, fw) + 1) if fh % w == 0 and fw % w == 0]
    if not cands:
        return None
    target = math.sqrt(fh * fw) / windows_per_side
    return min(cands, key=lambda w: (abs(math.log(w / target)), -w))


def _plan(hw, n, conv_stages, hat, window_size, ct_size, pad, default_windows, default_hw):
    feats = feature_sizes(hw, n)
    dfeats = feature_sizes(default_hw, n)
    plans = []
    for i in range(n):
        given = None if window_size is None else window_size[i]
        dw = default_windows[i]
        f = feats[i]
        if i < conv_stages:
            plans.append(StagePlan(hw, f, int(given or dw), f, (1, 1), ct_size, False))
            continue
        if given is not None:
            w = int(given)
        elif pad or hw == default_hw:
            w = dw
        else:
            per_side = max(1, round(max(dfeats[i]) / dw))
            w = auto_window(f, per_side)
            if w is None:
                return None, f"stage {i + 1} feature map {f[0]}x{f[1]} has no common square window >= {min(4, *f)}"
        if pad:
            padded = (math.ceil(f[0] / w) * w, math.ceil(f[1] / w) * w)
        else:
            if f[0] % w or f[1] % w:
                return None, f"window {w} does not divide stage {i + 1} feature map {f[0]}x{f[1]}"
            padded = f
        sr = (padded[0] // w, padded[1] // w) if hat[i] else (1, 1)
        ct = min(ct_size, w)
        tokenizer = bool(hat[i]) and (pad or sr != (1, 1))
        plans.append(StagePlan(hw, f, w, padded, sr, ct, tokenizer))
    return plans, None


def plan_stages(img_size, n: int, conv_stages: int, hat: Sequence[bool], window_size, ct_size: int,
                pad: bool, default_windows: Optional[Sequence[int]] = None, default_img_size=None) -> list:
    """Plan every stage for ``img_size`` or raise UsageError naming the nearest valid sizes."""
    hw = to_hw(img_size)
    hat = list(hat) if hat is not None else [True] * n
    if window_size is not None and not isinstance(window_size, (list, tuple)):
        window_size = [int(window_size)] * n
    if window_size is not None and len(window_size) != n:
        raise UsageError(f"window_size needs {n} entries (one per stage); got {list(window_size)}")
    if default_windows is None:
        default_windows = [7] * n if window_size is None else [w or 7 for w in window_size]
    default_hw = to_hw(default_img_size) if default_img_size is not None else hw
    if pad and window_size is None and default_img_size is None:
        default_hw = hw
    stride = 4 * 2 ** (n - 1)  # the last stage's stride: below it that stage sees only padding
    if min(hw) < stride:
        ok = next(s for s in range(stride, 64 * stride) if _plan((s, s), n, conv_stages, hat, window_size, ct_size,
                                                                  pad, default_windows, default_hw)[0] is not None)
        raise UsageError(f"img_size {hw[0]}x{hw[1]} is too small: the model downsamples by {stride}, so each side "
                         f"needs at least {stride} pixels; the smallest valid size is {ok}")
    plans, why = _plan(hw, n, conv_stages, hat, window_size, ct_size, pad, default_windows, default_hw)
    if plans is not None:
        return plans
    near = []
    step = 32
    base_h, base_w = round(hw[0] / step) * step, round(hw[1] / step) * step
    for dh in range(-6, 7):
        for dw in range(-6, 7):
            cand = (base_h + dh * step, base_w + dw * step)
            if min(cand) >= step and _plan(cand, n, conv_stages, hat, window_size, ct_size, pad,
                                           default_windows, default_hw)[0] is not None:
                near.append(cand)
    near.sort(key=lambda c: (abs(c[0] - hw[0]) + abs(c[1] - hw[1]), c))
    sizes = ", ".join(f"{h}x{w}" if h != w else str(h) for h, w in near[:4]) or "none found nearby"
    raise UsageError(f"img_size {hw[0]}x{hw[1]} cannot be windowed: {why}; nearest valid sizes: {sizes} "
                     f"(or use the _any_res variant, which pads to the window)")
