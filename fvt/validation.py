"""Checking a whole ``Config`` once, before any work: ``validate_config(cfg)``.

Each field's declared range / length / item type (``opt(..., range=...)`` in fvt.config),
then the rules that span fields, then what only the model and timm can judge: a known variant,
an input size ``fvt.models.windows`` can plan windows for (the smallest valid size is named),
an auto-augment policy timm can build. All problems are reported in one ``UsageError`` line.
"""

from __future__ import annotations

import difflib
from typing import Any

from .config import FIELD_SECTION, FIELDS, Config
from .errors import UsageError

def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _show(value) -> str:
    if isinstance(value, list):
        return " ".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def field_problems(key: str, value: Any) -> list:
    """What is wrong with ``value`` for field ``key`` by its declared range/length/item type."""
    meta = FIELDS[key].metadata
    if value is None:
        return []
    rng, length, item = meta.get("range"), meta.get("length"), meta.get("item")
    if isinstance(value, list):
        problems = []
        if length and not length[0] <= len(value) <= length[1]:
            n = str(length[0]) if length[0] == length[1] else f"{length[0]} to {length[1]}"
            problems.append(f"takes {n} values, got {len(value)}")
        for v in {repr(x): x for x in value}.values():  # each distinct bad item once (by repr: items may not hash)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (item is int and not float(v).is_integer()):
                problems.append(f"{v!r} is not {'an integer' if item is int else 'a number'}")
            elif rng is not None and v not in rng:
                problems.append(f"{v:g} is outside {rng}")
        return problems
    if rng is not None and isinstance(value, (int, float)) and value not in rng:
        return [f"must be in {rng}"]
    return []


def _cross_field_problems(cfg: Config) -> list:
    out = []
    for key in ("scale", "ratio"):
        v = getattr(cfg.aug, key)
        if len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[0] > v[1]:
            out.append(f"{_flag(key)} {_show(v)}: the lower bound comes first")
    m = cfg.sched.decay_milestones
    if all(isinstance(x, (int, float)) for x in m) and list(m) != sorted(m):
        out.append(f"--decay-milestones {_show(m)}: list the epochs in increasing order")
    from .data.channel_stats import stats_problem

    stats = stats_problem(cfg.aug.mean, cfg.aug.std, cfg.model.in_chans)
    if stats:
        out.append(stats)
    if cfg.model.in_chans != 3 and cfg.distill.teacher:
        out.append(f"--teacher with --in-chans {cfg.model.in_chans}: a teacher sees the student's images as RGB; "
                   "distil with --in-chans 3")
    if cfg.model.in_chans != 3 and cfg.data.cache != "none":
        out.append(f"--cache {cfg.data.cache} with --in-chans {cfg.model.in_chans}: the cache keeps RGB pixels; "
                   "train without --cache")
    return out


def _name_problems(cfg: Config) -> list:
    """A known variant (from the table shipped with fvt: no torch needed to say so)."""
    from .models.table import shipped_table

    name, names = cfg.model.model, list(shipped_table())
    if name in names:
        return []
    close = difflib.get_close_matches(name, names, n=1)
    return [f"--model {name}: unknown model" + (f"; did you mean '{close[0]}'?" if close else "; see `fvt models`")]


def _model_problems(cfg: Config) -> list:
    """Problems only the model and timm can judge: an input size the variant can window
    (fvt.models.windows does the planning), and an auto-augment policy timm can build."""
    import torch

    from .models import model_info
    from .models.registry import build_model

    name = cfg.model.model
    out = []
    if cfg.model.img_size is None:  # the variant's own size, recorded so config.yaml says what was trained
        cfg.model.img_size = list(model_info(name)["input_size"][1:])
    try:
        with torch.device("meta"):  # plans the windows exactly as training will, without allocating weights
            build_model(name, num_classes=2, img_size=list(cfg.model.img_size))
    except UsageError as e:
        out.append(f"--img-size {_show(cfg.model.img_size)} for {name}: {e}")
    aa = cfg.aug.auto_augment
    if aa and str(aa).lower() not in ("none", "null", "") and not cfg.aug.three_augment:
        from timm.data import create_transform

        try:
            create_transform(input_size=(3, 32, 32), is_training=True, auto_augment=str(aa))
        except Exception as e:  # timm reports bad policies with AssertionError / KeyError / ValueError
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            out.append(f"--auto-augment {aa}: not a timm policy ({detail}); use e.g. rand-m9-mstd0.5-inc1, "
                       "augmix-m5, original or none")
    return out


def validate_config(cfg: Config, model_checks: bool = True) -> Config:
    """Check every field against its declared range, then the cross-field checks and the model name,
    then (``model_checks``) what needs torch and timm: the input size and the auto-augment policy.

    Raises one ``UsageError`` naming every bad flag and what would work. Fills the defaults
    that depend on the model (``img_size``: the variant's own) and on the run's length (the warm-up).
    Call before any work starts; ``model_checks=False`` imports no torch (the command line checks that
    way first)."""
    problems = []
    for key, section in FIELD_SECTION.items():
        value = getattr(getattr(cfg, section), key)
        problems += [f"{_flag(key)} {_show(value)}: {p}" for p in field_problems(key, value)]
    if not problems:
        problems += _cross_field_problems(cfg)
    if not problems:
        problems += _name_problems(cfg)
    if not problems and model_checks:
        problems += _model_problems(cfg)
    if problems:
        raise UsageError("; ".join(problems))
    if cfg.sched.warmup_epochs is None:  # recorded as run, so config.yaml says what was trained
        from .config.sections import default_warmup_epochs

        cfg.sched.warmup_epochs = default_warmup_epochs(cfg.sched.epochs)
    return cfg
