"""Preprocessing (what a checkpoint needs to see images as it was trained) and transforms.

``Preprocessing`` travels in every checkpoint and export (``to_dict``/``from_dict``) and
``eval_transform(preproc)`` rebuilds the exact eval pipeline: resize to size/crop_pct, center
crop, normalise. The train pipeline is timm's ``create_transform`` (random-resized crop,
flips, RandAugment or color jitter, random erasing) or DeiT III's ThreeAugment.

RandAugment fix: timm 1.0.31's ``PosterizeIncreasing`` maps the top magnitude (10, reached by
``m9-mstd0.5`` whenever the gaussian draw exceeds 10, ~2% of posterize calls) to
``bits = 4 - 4 = 0``. Pillow < 11 turned bits=0 into a black image; Pillow 13 raises
``ValueError: bits must be between or equal to 1 and 8``, killing a DataLoader worker after a
few hundred images. ``make_posterize_safe`` clamps bits to [1, 8] in the built transform (1
bit is the nearest valid strongest posterize) without touching timm's global tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence, Tuple

import torch
from timm.data import create_transform
from timm.data.auto_augment import AugmentOp
from torchvision import transforms as T

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
DEFAULT_INPUT_SIZE = (224, 224)


@dataclass
class Preprocessing:
    input_size: Tuple[int, int] = DEFAULT_INPUT_SIZE  # (H, W)
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def __post_init__(self):
        self.input_size = normalize_size(self.input_size)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        self.crop_pct = float(self.crop_pct)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = {k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def from_config(cls, cfg: Any, default_size: Optional[Sequence[int]] = None) -> "Preprocessing":
        """From a ``Config``: model.img_size (else ``default_size``, else 224) and the aug section."""
        from .channel_stats import channel_stats

        size = cfg.model.img_size or default_size or DEFAULT_INPUT_SIZE
        a = cfg.aug
        mean, std = channel_stats(a.mean, a.std, getattr(cfg.model, "in_chans", 3))
        return cls(normalize_size(size), tuple(mean), tuple(std), a.crop_pct, a.interpolation)

    @property
    def channels(self) -> int:
        """Input channels of the model (one mean per channel): 3 RGB, 1 grayscale, N bands."""
        return len(self.mean)

    @property
    def min_decode_size(self) -> int:
        """Short side a decoded image needs so that eval resizing never upsamples."""
        return int(max(self.input_size) / min(self.crop_pct, 1.0) + 0.999)


def normalize_size(size: Any) -> Tuple[int, int]:
    """N, [N], (H, W) or (C, H, W) -> (H, W)."""
    if isinstance(size, int):
        return (size, size)
    size = [int(s) for s in size]
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input size must be N or H W, got {size}")
    return (size[0], size[1])


def eval_transform(preproc: Preprocessing):
    return create_transform(
        input_size=(preproc.channels, *preproc.input_size), is_training=False, crop_pct=preproc.crop_pct,
        interpolation=preproc.interpolation, mean=preproc.mean, std=preproc.std)


def train_transform(preproc: Preprocessing, aug: Any):
    """Training augmentation from an ``AugConfig`` (or anything with the same fields)."""
    aa = aug.auto_augment
    aa = None if (aa is None or str(aa).lower() in ("", "none", "null") or aug.three_augment) else aa
    if preproc.channels not in (1, 3):  # bands as a tensor: only the geometric augmentations apply
        from types import SimpleNamespace

        aa, aug = None, SimpleNamespace(**{**vars(aug), "color_jitter": 0.0, "three_augment": False})
    common = dict(
        input_size=(preproc.channels, *preproc.input_size), is_training=True, scale=tuple(aug.scale), ratio=tuple(aug.ratio),
        hflip=aug.hflip, vflip=aug.vflip, interpolation=preproc.interpolation,
        mean=preproc.mean, std=preproc.std, re_prob=aug.reprob, re_mode=aug.remode, re_count=aug.recount)
    if not aug.three_augment:
        tf = create_transform(auto_augment=aa, color_jitter=aug.color_jitter, **common)
        return make_posterize_safe(tf)
    primary, _, final = create_transform(auto_augment=None, color_jitter=0.0, separate=True, **common)
    three = [T.RandomChoice([T.RandomGrayscale(p=1.0), T.RandomSolarize(threshold=128, p=1.0),
                             T.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))])]
    if aug.color_jitter:
        three.append(T.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    return T.Compose([*primary.transforms, *three, *final.transforms])


class TrainTransformAt:
    """The training transform at another input size (progressive resizing): ``obj(size)``, built once
    per size in each process; the augmentation is the same, only the output size changes."""

    def __init__(self, preproc: Preprocessing, aug: Any):
        self.preproc, self.aug, self._built = preproc, aug, {}

    def __call__(self, size) -> Any:
        size = normalize_size(size)
        if size not in self._built:
            p = Preprocessing(size, self.preproc.mean, self.preproc.std, self.preproc.crop_pct, self.preproc.interpolation)
            self._built[size] = train_transform(p, self.aug)
        return self._built[size]


def _safe_posterize(fn):
    def posterize(img, bits, **kw):
        return fn(img, int(min(8, max(1, bits))), **kw)

    posterize.__wrapped__ = fn
    return posterize


def make_posterize_safe(transform):
    """Clamp the bits of every posterize op inside a (nested) timm transform to [1, 8]."""
    seen = set()

    def visit(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, AugmentOp):
            if obj.name.startswith("Posterize") and not hasattr(obj.aug_fn, "__wrapped__"):
                obj.aug_fn = _safe_posterize(obj.aug_fn)
            return
        for child in list(getattr(obj, "transforms", None) or []) + list(getattr(obj, "ops", None) or []):
            visit(child)
        for child in getattr(obj, "policy", None) or []:  # AutoAugment: list of op lists
            for op in (child if isinstance(child, (list, tuple)) else [child]):
                visit(op)

    visit(transform)
    return transform


def denormalize(x: torch.Tensor, preproc: Preprocessing) -> torch.Tensor:
    """Undo normalisation (for thumbnails in figures): CHW or NCHW float in [0, 1]."""
    mean = torch.tensor(preproc.mean, dtype=x.dtype).view(-1, 1, 1)
    std = torch.tensor(preproc.std, dtype=x.dtype).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
