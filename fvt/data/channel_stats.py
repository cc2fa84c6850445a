"""Per-channel normalisation statistics for ``--in-chans``: plain Python, so the start-up checks
(``fvt.validation``) run before torch is imported. ``fvt.data.channels`` does the decoding."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = 0.449, 0.226  # ImageNet's mean of the three channel means / stds


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(float(x) - y) < 1e-6 for x, y in zip(a, b))


def stats_problem(mean: Sequence[float], std: Sequence[float], in_chans: int) -> Optional[str]:
    """Why ``mean``/``std`` cannot normalise ``in_chans`` channels (None when they can)."""
    for flag, values, default in (("--mean", mean, IMAGENET_MEAN), ("--std", std, IMAGENET_STD)):
        if len(values) != in_chans and not _same(values, default):
            shown = " ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values)
            return (f"{flag} {shown}: takes {in_chans} values, got {len(values)} (one per channel of "
                    f"--in-chans {in_chans}; or leave it at its default)")
    return None


def channel_stats(mean: Sequence[float], std: Sequence[float], in_chans: int) -> Tuple[List[float], List[float]]:
    """Per-channel mean and std for ``in_chans`` channels (the ImageNet default adapted, see the module doc)."""
    from ..errors import UsageError

    problem = stats_problem(mean, std, in_chans)
    if problem:
        raise UsageError(problem)
    if len(mean) != in_chans:
        mean = [GRAY_MEAN] * in_chans
    if len(std) != in_chans:
        std = [GRAY_STD] * in_chans
    return [float(m) for m in mean], [float(s) for s in std]
