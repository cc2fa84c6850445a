"""fvt's FasterViT variants as timm models: ``timm.create_model(NAME, ...)`` after ``import fvt``.

:func:`register_all` puts every variant in timm's registry (it is idempotent; ``import fvt`` calls
it). Each variant gets two names:

* ``fvt_<variant>`` (e.g. ``fvt_faster_vit_0_224``): always fvt's implementation;
* ``<variant>`` (e.g. ``faster_vit_0_224``): fvt's, unless the official ``fastervit`` package is
  imported, whose models use the same names: then they are the official ones, whichever package was
  imported first. fvt never replaces another package's registration (it warns once that it left
  them), and the official package replaces fvt's when it is imported later (timm warns
  "Overwriting ..."). See docs/timm.md.

The entry points build through ``timm.models.build_model_with_cfg``, so timm's pretrained cfgs,
``features_only`` (``feature_cls`` "getter", the default, or "hook"), ``out_indices``, ``device`` /
``dtype`` and the ``local-dir:`` / ``hf-hub:`` sources work as for timm's own models. Weights are
loaded by fvt (:func:`fvt.models.checkpoint.load_pretrained`: safe loading, the official
``.pth.tar`` layout, head and input-channel adaptation), from timm's cfg: a ``file`` overlay first,
then the Hub file, then the URL.
"""

import functools
import logging
import sys
import warnings
from pathlib import Path

import torch.nn as nn

from ..errors import UsageError
from .registry import MEAN, STD, VARIANTS, build_model, weights_cfg
from .windows import feature_sizes, to_hw

_log = logging.getLogger(__name__)

PREFIX = "fvt_"  # fvt's own name for each variant in timm's registry, whatever else is imported
FAMILY = __name__.rsplit(".", 1)[-1]  # the module name timm lists these models under
# timm's register_model reads the pretrained cfgs of a module's entry points from ``default_cfgs``
default_cfgs: dict = {}


def variant_of(timm_name: str) -> str:
    """fvt's variant name for a timm model name (``fvt_faster_vit_0_224`` -> ``faster_vit_0_224``)."""
    return timm_name[len(PREFIX):] if timm_name.startswith(PREFIX) and timm_name[len(PREFIX):] in VARIANTS \
        else timm_name


def _size_cfg(name: str, img_size, in_chans: int) -> dict:
    """The cfg keys that depend on the input: size, channels and the final feature map (pool_size)."""
    arch = VARIANTS[name]["arch"]
    h, w = to_hw(img_size if img_size is not None else arch["img_size"])
    return dict(input_size=(in_chans, h, w), pool_size=feature_sizes((h, w), len(arch["depths"]))[-1])


def default_cfg(name: str) -> dict:
    spec = VARIANTS[name]
    return dict(mean=MEAN, std=STD, crop_pct=spec["crop_pct"], crop_mode=spec["crop_mode"], interpolation="bicubic",
                num_classes=1000, first_conv="patch_embed.conv_down.0", classifier="head", fixed_input_size=True,
                **_size_cfg(name, None, 3), **weights_cfg(name))


def _weights_from_cfg(cfg: dict):
    """timm's precedence: a local ``file`` first, then the hub file, then the URL."""
    if cfg.get("file"):  # timm's "local-dir:FOLDER" (e.g. `fvt export --format timm-folder`) names the folder
        local = cfg.get("source") == "local-dir"
        return str(Path(cfg["file"]) / "model.safetensors") if local else str(cfg["file"])
    if cfg.get("hf_hub_id"):
        return f"hf-hub:{cfg['hf_hub_id']}" + (f":{cfg['hf_hub_filename']}" if cfg.get("hf_hub_filename") else "")
    return cfg.get("url") or None


def _build(name: str, pretrained: bool, cfg: dict, **kwargs) -> nn.Module:
    """The model (with its weights when ``pretrained``) that timm's builder then configures and wraps."""
    kwargs.pop("pretrained_model_args", None)  # timm's copy of a local-dir config.json's model args (already in kwargs)
    model = build_model(name, **kwargs)
    if pretrained:
        weights = _weights_from_cfg(cfg)
        if weights is None:
            raise UsageError(f"no weights are published for {name} (an fvt-only variant); pass "
                             f"pretrained_cfg_overlay=dict(file=PATH) or train it with `fvt train`")
        from .checkpoint import load_pretrained

        model.load_report = load_pretrained(model, weights)
        _log.info(model.load_report.summary())
    return model


def create(timm_name: str, pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
           **kwargs) -> nn.Module:
    """What ``timm.create_model(timm_name, ...)`` calls."""
    from timm.models import build_model_with_cfg, resolve_pretrained_cfg

    name = variant_of(timm_name)
    # the cfg describes the model as built: its input size, channels and final feature map
    overlay = dict(pretrained_cfg_overlay or {})
    if kwargs.get("img_size") is not None or kwargs.get("in_chans") is not None:
        overlay.update(_size_cfg(name, kwargs.get("img_size"), kwargs.get("in_chans") or 3))
    cfg = resolve_pretrained_cfg(timm_name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay).to_dict()
    feature_cfg = dict(out_indices=tuple(range(len(VARIANTS[name]["arch"]["depths"]))), feature_cls="getter")
    feature_cls = kwargs.get("feature_cls")
    if kwargs.get("features_only") and isinstance(feature_cls, str) and "hook" in feature_cls.lower():
        feature_cfg["no_rewrite"] = True  # hooks on each stage's ``out`` tap, the model left as it is
    # fvt loads the weights itself (in _build): timm's builder is told pretrained=False
    return build_model_with_cfg(functools.partial(_build, name, pretrained, cfg), timm_name, pretrained=False,
                                pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay,
                                feature_cfg=feature_cfg, **kwargs)


def _entry(timm_name: str):
    def entry(pretrained=False, **kwargs):
        return create(timm_name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = timm_name
    entry.__module__ = __name__
    entry.__doc__ = f"fvt's {variant_of(timm_name)} (FasterViT), built by fvt.models.timm_models.create."
    return entry


def register_all() -> list:
    """Register every fvt variant in timm's registry; calling it again registers nothing new.

    Returns the names registered by this call. A plain name another package (the official
    ``fastervit``) already registered is left to it, with one warning; ``fvt_<name>`` is fvt's."""
    from timm.models import is_model, model_entrypoint, register_model

    mod = sys.modules[__name__]
    new, taken = [], {}
    for name in VARIANTS:
        for timm_name in (PREFIX + name, name):
            if is_model(timm_name):
                owner = model_entrypoint(timm_name).__module__
                if owner == __name__:
                    continue
                if timm_name == name:
                    taken[name] = owner
                    continue
            default_cfgs[timm_name] = default_cfg(name)
            entry = _entry(timm_name)
            setattr(mod, timm_name, entry)
            register_model(entry)
            new.append(timm_name)
    if taken and any(n in new for n in (PREFIX + t for t in taken)):  # once: when the aliases appear
        owners = ", ".join(sorted(set(taken.values())))
        first = next(iter(taken))
        warnings.warn(f"timm's names {first} and {len(taken) - 1} more FasterViT variants belong to {owners} "
                      f"(imported before fvt), so timm.create_model({first!r}) builds that package's model; fvt's "
                      f"is timm.create_model({PREFIX + first!r}) or fvt.create_model({first!r}) (docs/timm.md)",
                      UserWarning, stacklevel=2)
    return new


def reclaim_plain_names() -> list:
    """Point timm's plain names back at fvt's variants after a package imported later took them.

    Only names fvt registered itself in this process are taken back (its entry is on this module);
    returns the names reclaimed."""
    from timm.models import is_model, model_entrypoint, register_model

    mod = sys.modules[__name__]
    back = []
    for name in VARIANTS:
        entry = getattr(mod, name, None)
        if entry is None or not is_model(name) or model_entrypoint(name) is entry:
            continue
        register_model(entry)
        back.append(name)
    return back
