"""Variant registry: official FasterViT hyper-parameters, one entry per name.

``create_model`` builds fvt's implementation. The same variants in timm's registry (so that
``timm.create_model("faster_vit_0_224")`` works after ``import fvt``): fvt/models/timm_models.py.
"""

from __future__ import annotations

import copy
import difflib
import logging
from typing import Optional

import torch.nn as nn

from ..errors import ArgumentError, UsageError
from .faster_vit import FasterViT
from .hub import OFFICIAL_REPO, published

_log = logging.getLogger(__name__)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_ATTN_HAT = [False, False, True, False]
_NO_HAT = [False, False, False, False]

# name: (architecture kwargs, crop_pct, crop_mode)
_BASE = {
    "faster_vit_0": (dict(dim=64, in_dim=64, depths=[2, 3, 6, 5], num_heads=[2, 4, 8, 16], drop_path_rate=0.2), 0.875),
    "faster_vit_1": (dict(dim=80, in_dim=32, depths=[1, 3, 8, 5], num_heads=[2, 4, 8, 16], drop_path_rate=0.2), 1.0),
    "faster_vit_2": (dict(dim=96, in_dim=64, depths=[3, 3, 8, 5], num_heads=[2, 4, 8, 16], drop_path_rate=0.2), 1.0),
    "faster_vit_3": (dict(dim=128, in_dim=64, depths=[3, 3, 12, 5], num_heads=[2, 4, 8, 16], drop_path_rate=0.3,
                          layer_scale=1e-5, do_propagation=True), 1.0),
    "faster_vit_4": (dict(dim=196, in_dim=64, depths=[3, 3, 12, 5], num_heads=[4, 8, 16, 32], drop_path_rate=0.3,
                          layer_scale=1e-5, do_propagation=True), 1.0),
    "faster_vit_5": (dict(dim=320, in_dim=64, depths=[3, 3, 12, 5], num_heads=[4, 8, 16, 32], drop_path_rate=0.3,
                          layer_scale=1e-5, do_propagation=True), 1.0),
    "faster_vit_6": (dict(dim=320, in_dim=64, depths=[3, 3, 16, 8], num_heads=[4, 8, 16, 32], drop_path_rate=0.5,
                          layer_scale=1e-5, do_propagation=True), 1.0),
}
# ImageNet-21K pretrained FasterViT-4: no HAT, global attention in stages 3-4.
_21K = {224: ([7, 7, 14, 7], 0.95), 384: ([7, 7, 24, 12], 1.0), 512: ([7, 7, 32, 16], 1.0), 768: ([7, 7, 48, 24], 0.93)}
# Default input sizes of the official any-resolution entry points.
_ANY_RES_SIZE = {"faster_vit_2": [541, 960]}


def _variants() -> dict:
    v = {}
    for base, (kw, crop) in _BASE.items():
        arch = dict(kw, window_size=[7, 7, 7, 7], ct_size=2, mlp_ratio=4, hat=_ATTN_HAT)
        v[f"{base}_224"] = dict(arch=dict(arch, img_size=224), crop_pct=crop, crop_mode="center")
        v[f"{base}_any_res"] = dict(arch=dict(arch, img_size=_ANY_RES_SIZE.get(base, [576, 960]), pad_to_window=True),
                                    crop_pct=crop, crop_mode="center")
    k4 = _BASE["faster_vit_4"][0]
    for res, (win, crop) in _21K.items():
        arch = dict(k4, window_size=win, ct_size=2, mlp_ratio=4, hat=_NO_HAT, drop_path_rate=0.42)
        v[f"faster_vit_4_21k_{res}"] = dict(arch=dict(arch, img_size=res), crop_pct=crop, crop_mode="squash")
        v[f"faster_vit_4_21k_{res}_any_res"] = dict(
            arch=dict(arch, img_size=[576, 960], pad_to_window=True, drop_path_rate=0.3), crop_pct=crop,
            crop_mode="squash")
    # fvt-only compact variant (NOT an official release; no checkpoint exists): for the demo and CPU training.
    v["faster_vit_nano"] = dict(arch=dict(dim=40, in_dim=32, depths=[1, 2, 3, 2], num_heads=[2, 4, 5, 10],
                                          window_size=[4, 4, 4, 4], ct_size=2, mlp_ratio=3, hat=[False, False, True, True],
                                          drop_path_rate=0.05, img_size=128), crop_pct=0.875, crop_mode="center",
                                official=False)
    # fvt-only: nano at width 64 (2.4x its parameters); tried for the flowers recipe, no better (fvt/recipes/flowers.yaml).
    v["faster_vit_micro"] = dict(arch=dict(v["faster_vit_nano"]["arch"], dim=64, num_heads=[2, 4, 8, 16]),
                                 crop_pct=0.875, crop_mode="center", official=False)
    return v


VARIANTS = _variants()


def list_models(pattern: Optional[str] = None) -> list:
    """Registered variant names (optionally filtered with a shell-style pattern)."""
    import fnmatch

    names = list(VARIANTS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def _unknown_model(name: str) -> UsageError:
    close = difflib.get_close_matches(str(name), list(VARIANTS), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `fvt models`"
    return UsageError(f"unknown model '{name}'{hint}")


def weights_cfg(name: str) -> dict:
    """Where a variant's official weights live, in timm's pretrained-cfg keys."""
    pub = published(name)
    if pub is None:
        return {}
    return dict(hf_hub_id=OFFICIAL_REPO, hf_hub_filename=pub.file, url=pub.url, license="nvidia-source-code",
                origin_url="https://github.com/NVlabs/FasterViT", paper_ids="arXiv:2306.06189")


def pretrained_cfg_for(name: str, model: FasterViT) -> dict:
    spec = VARIANTS[name]
    h, w = model.img_size
    return dict(architecture=name, input_size=(model.in_chans, h, w), pool_size=model.plans[-1].feat, mean=MEAN,
                std=STD, crop_pct=spec["crop_pct"], crop_mode=spec["crop_mode"], interpolation="bicubic",
                num_classes=model.num_classes,
                first_conv="patch_embed.conv_down.0", classifier="head", fixed_input_size=True,
                official=spec.get("official", True), **weights_cfg(name))


def _name_any_res(msg: str, name: str) -> str:
    """The window planner suggests "the _any_res variant": name it, or drop the hint where none exists."""
    generic = "(or use the _any_res variant, which pads to the window)"
    alt = name if name.endswith("_any_res") else f"{name[:-4] if name.endswith('_224') else name}_any_res"
    if alt in VARIANTS and alt != name:
        return msg.replace(generic, f"(or use {alt}, which pads to the window)")
    return msg.replace(" " + generic, "")


def build_model(name: str, **kwargs) -> FasterViT:
    """Build a variant without loading weights; kwargs override its architecture."""
    if name not in VARIANTS:
        raise _unknown_model(name)
    spec = VARIANTS[name]
    arch = copy.deepcopy(spec["arch"])
    user = {k: v for k, v in kwargs.items() if v is not None}
    if "img_size" in user:
        user["img_size"] = list(user["img_size"]) if isinstance(user["img_size"], (list, tuple)) else user["img_size"]
    arch.update(user)
    # Windows follow the planning policy when the size changes and no window was given.
    defaults = spec["arch"]["window_size"]
    if "window_size" not in user and arch["img_size"] != spec["arch"]["img_size"] and not arch.get("pad_to_window"):
        arch["window_size"] = None
    try:
        model = FasterViT(**arch, default_window_size=defaults, default_img_size=spec["arch"]["img_size"])
    except TypeError as e:  # (an ArgumentError is a TypeError too, as callers such as timm expect)
        raise ArgumentError(f"bad argument for model '{name}': {e}") from None
    except UsageError as e:
        raise UsageError(_name_any_res(str(e), name)) from None
    # A plain dict that create_model(name, **model_kwargs) rebuilds the same architecture from
    # (where it lives and its precision are not architecture).
    kw = {k: v for k, v in user.items() if k not in ("device", "dtype")}
    kw["img_size"] = list(model.img_size)
    kw["window_size"] = [p.window for p in model.plans]
    kw["num_classes"] = model.num_classes
    model.model_name = name
    model.model_kwargs = kw
    model.pretrained_cfg = pretrained_cfg_for(name, model)
    model.default_cfg = model.pretrained_cfg
    return model


def create_model(name: str, pretrained=None, num_classes: int = 1000, img_size=None,
                 drop_path_rate: Optional[float] = None, pretrained_raw: bool = False, **kwargs) -> nn.Module:
    """Build a FasterViT variant and load ``pretrained`` with load_pretrained: ``True`` or
    ``"official"`` (the variant's official weights, downloaded once and cached),
    ``"hf-hub:OWNER/REPO[:FILE]"``, an ``https://`` URL, or a local file (official .pth.tar, fvt
    checkpoint, plain state dict or .safetensors)."""
    from ..arguments import check_arguments

    check_arguments("create_model", model_name=name, num_classes=num_classes, img_size=img_size,
                    drop_path_rate=drop_path_rate)
    model = build_model(name, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path_rate, **kwargs)
    if pretrained:
        from .checkpoint import load_pretrained

        report = load_pretrained(model, pretrained, use_ema=not pretrained_raw)
        model.load_report = report
        _log.info(report.summary())
    return model


def model_info(name: str) -> dict:
    """Static facts about a variant (no weights built): architecture kwargs and defaults."""
    if name not in VARIANTS:
        raise _unknown_model(name)
    spec = VARIANTS[name]
    size = spec["arch"]["img_size"]
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return dict(name=name, arch=copy.deepcopy(spec["arch"]), input_size=(3, *hw), crop_pct=spec["crop_pct"],
                official=spec.get("official", True))
