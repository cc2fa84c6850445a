"""The typed configuration that flows through fvt.

One dataclass per section. Every field name is unique across sections, so a field is
addressed the same way everywhere: ``lr`` in a flat YAML file, ``optim: {lr: ...}`` in a
sectioned one, and ``--lr`` on the command line. Precedence: flag > file > default.
Help texts live in ``field(metadata={"help": ...})`` and become ``fvt train --help``.

Every numeric field declares its valid values next to its help: ``range="[0, 1)"`` (interval
notation; ``inf`` for no bound; a tuple ``(lo, hi)`` means the closed interval) and, for lists,
``length=N`` or ``(min, max)``. ``fvt.validation.validate_config(cfg)`` checks every field
against them, plus the checks that span fields or need the model, in one place before any work
starts; values are not checked while a config is read, so an old checkpoint's config still
loads for eval.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import UsageError, choice_message


def opt(default, help: str, choices=None, range=None, length=None, item=None, **kw):
    """A config field. ``range``: valid values (``"[0, 1)"``, ``"(0, inf)"`` or a closed
    ``(lo, hi)``), for a list each item; ``length``: a list's length (N or (min, max));
    ``item``: a list's item type (int or float)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if range is not None:
        meta["range"] = Range.parse(range)
    if length is not None:
        meta["length"] = (length, length) if isinstance(length, int) else tuple(length)
    if item is not None:
        meta["item"] = item
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class Range:
    """An interval of valid numbers; ``None`` bounds are unbounded."""

    lo: Optional[float]
    hi: Optional[float]
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, spec) -> "Range":
        if isinstance(spec, Range):
            return spec
        if isinstance(spec, (tuple, list)):
            return cls(spec[0], spec[1])
        m = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*", str(spec))
        if not m:
            raise ValueError(f"bad range {spec!r}: use interval notation such as '[0, 1)'")

        def bound(t):
            return None if t.lstrip("+-") == "inf" else float(t)

        return cls(bound(m.group(2)), bound(m.group(3)), m.group(1) == "(", m.group(4) == ")")

    def __contains__(self, x) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:  # NaN is never valid
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            return False
        return True

    def __str__(self) -> str:
        def fmt(v, sign):
            return f"{sign}inf" if v is None else f"{v:g}"

        return (f"{'(' if self.lo_open or self.lo is None else '['}{fmt(self.lo, '-')}, "
                f"{fmt(self.hi, '')}{')' if self.hi_open or self.hi is None else ']'}")


# OptimConfig has a field named `opt`, which shadows the helper inside its class body.
_opt = opt


@dataclass
class ModelConfig:
    model: str = opt("faster_vit_0_224", "Model name (see `fvt models`).")
    img_size: Optional[list] = opt(None, "Input size: N or H W. Default: the variant's own "
                                    "(224 for *_224, 128 for faster_vit_nano ...).", range="[1, 4096]", length=(1, 2), item=int)
    pretrained: Optional[str] = opt(None, "Weights to start from: official (the --model's published weights, downloaded once), hf-hub:OWNER/REPO[:FILE], https://URL, or a file (.pth.tar, fvt checkpoint, .safetensors).")
    pretrained_raw: bool = opt(False, "Take the raw weights from --pretrained even when it also holds EMA weights.")
    drop_path_rate: Optional[float] = opt(None, "Stochastic depth rate. Default: the variant's official value.", range="[0, 1)")
    drop_rate: float = opt(0.0, "Dropout before the classifier.", range="[0, 1)")
    freeze: str = opt("none", "Freeze weights: none, head (train only the head) or stages:N (freeze the first N stages).")
    freeze_epochs: int = opt(0, "Fine-tune warm-up: train with --freeze (head when none) for the first N epochs, then the whole network.", range="[0, inf)")
    bn_eval: bool = opt(False, "Keep BatchNorm statistics frozen (eval mode) while training.")
    sync_bn: bool = opt(False, "Convert BatchNorm to SyncBatchNorm under distributed training.")
    grad_checkpointing: bool = opt(False, "Recompute activations in backward to save memory.")
    channels_last: bool = opt(True, "Use channels_last memory format for the convolutional stages.")
    compile: bool = opt(False, "Wrap the model with torch.compile.")


@dataclass
class DataConfig:
    data: Optional[str] = opt(None, "Image folder (root/<class>/..., or root/train + root/val), a CSV of path,label, or shards of fvt data shard (their folder, a brace pattern, http(s)://, pipe:).")
    val_data: Optional[str] = opt(None, "Separate validation folder or CSV (overrides the automatic split).")
    val_split: float = opt(0.2, "Fraction of each class held out for validation when the data is not pre-split.", range="[0, 1)")
    split_seed: int = opt(42, "Seed of the stratified train/val split.", range="[0, 4294967295]")
    batch_size: int = opt(64, "Training batch size per process.", range="[1, inf)")
    eval_batch_size: Optional[int] = opt(None, "Evaluation batch size per process. Default: 2x batch size.", range="[1, inf)")
    workers: int = opt(2, "DataLoader worker processes per training process.", range="[0, 256]")
    sampler: str = opt("random", "Training sampler.", choices=("random", "balanced", "repeated"))
    repeats: int = opt(3, "Repeats per image for the repeated-augmentation sampler.", range="[1, 64]")
    verify_images: bool = opt(False, "Fully decode every image in the start-up scan (slower; default: header check).")
    shuffle_buffer: int = opt(1000, "Shards (--data from fvt data shard): samples in each worker's shuffle buffer.", range="[1, inf)")


@dataclass
class AugConfig:
    mean: list = opt([0.485, 0.456, 0.406], "Normalisation mean (saved with checkpoints).", range="[0, 1]", length=3)
    std: list = opt([0.229, 0.224, 0.225], "Normalisation std (saved with checkpoints).", range="(0, 1]", length=3)
    crop_pct: float = opt(0.875, "Eval: resize to size/crop_pct, then center-crop.", range="(0, 1]")
    interpolation: str = opt("bicubic", "Resize interpolation.", choices=("bilinear", "bicubic", "nearest"))
    scale: list = opt([0.08, 1.0], "Random-resized-crop area range.", range="(0, 1]", length=2)
    ratio: list = opt([0.75, 1.3333333], "Random-resized-crop aspect range.", range="(0, inf)", length=2)
    hflip: float = opt(0.5, "Horizontal flip probability.", range="[0, 1]")
    vflip: float = opt(0.0, "Vertical flip probability.", range="[0, 1]")
    auto_augment: Optional[str] = opt("rand-m9-mstd0.5-inc1", "timm auto-augment policy (RandAugment string), or none.")
    color_jitter: float = opt(0.4, "Color jitter strength (used when auto_augment is none).", range="[0, inf)")
    three_augment: bool = opt(False, "DeiT III ThreeAugment (grayscale / solarize / blur) instead of auto-augment.")
    reprob: float = opt(0.25, "Random erasing probability.", range="[0, 1]")
    remode: str = opt("pixel", "Random erasing mode.", choices=("const", "rand", "pixel"))
    recount: int = opt(1, "Random erasing count.", range="[1, 64]")
    mixup: float = opt(0.0, "Mixup alpha (0 disables).", range="[0, inf)")
    cutmix: float = opt(0.0, "CutMix alpha (0 disables).", range="[0, inf)")
    mixup_prob: float = opt(1.0, "Probability of applying mixup or cutmix to a batch.", range="[0, 1]")
    mixup_switch_prob: float = opt(0.5, "Probability of switching to cutmix when both are enabled.", range="[0, 1]")
    mixup_mode: str = opt("batch", "How mixup/cutmix params are drawn.", choices=("batch", "pair", "elem"))
    smoothing: float = opt(0.1, "Label smoothing.", range="[0, 1)")


@dataclass
class OptimConfig:
    opt: str = _opt("adamw", "Optimizer: any timm optimizer name (adamw, sgd, lamb, lion, ...) or sophia.")
    lr: float = _opt(1e-3, "Peak learning rate (after optional --lr-base-batch scaling).", range="[0, inf)")
    lr_base_batch: Optional[int] = _opt(None, "If set, lr is scaled linearly by global_batch / lr_base_batch.", range="[1, inf)")
    weight_decay: float = _opt(0.05, "Weight decay (never applied to norms, biases, position-bias MLPs).", range="[0, inf)")
    momentum: float = _opt(0.9, "SGD momentum.", range="[0, 1)")
    opt_eps: Optional[float] = _opt(None, "Optimizer epsilon.", range="(0, 1)")
    opt_betas: Optional[list] = _opt(None, "Optimizer betas.", range="[0, 1)", length=(2, 3))
    layer_decay: Optional[float] = _opt(None, "Layer-wise lr decay factor (e.g. 0.75); none disables.", range="(0, 1]")
    clip_grad: Optional[float] = _opt(None, "Gradient clipping threshold; none disables.", range="(0, inf)")
    clip_mode: str = _opt("norm", "Gradient clipping mode.", choices=("norm", "value", "agc"))
    accum_steps: int = _opt(1, "Gradient accumulation steps.", range="[1, inf)")
    sophia_rho: float = _opt(0.04, "SophiaG clipping rho.", range="(0, inf)")
    hess_interval: int = _opt(10, "SophiaG: refresh the Hessian estimate every k optimizer steps.", range="[1, inf)")
    sam_rho: float = _opt(0.0, "Sharpness-aware minimization radius (0 = off; ~0.05 for SGD/AdamW): a second "
                                "forward/backward per step, from the worst point within rho.", range="[0, inf)")
    sam_adaptive: bool = _opt(False, "Adaptive SAM (ASAM): scale the radius by each weight's magnitude (use rho ~0.5-2).")


@dataclass
class SchedConfig:
    sched: str = opt("cosine", "LR schedule.", choices=("cosine", "step", "multistep", "plateau", "poly", "tanh", "none"))
    epochs: int = opt(30, "Total training epochs.", range="[1, inf)")
    warmup_epochs: float = opt(3, "Linear warmup epochs.", range="[0, inf)")
    warmup_lr: float = opt(1e-6, "LR at the start of warmup.", range="[0, inf)")
    min_lr: float = opt(1e-6, "Floor of the schedule.", range="[0, inf)")
    decay_epochs: float = opt(30, "Step schedule: epochs between decays.", range="(0, inf)")
    decay_milestones: list = opt([30, 60], "Multistep schedule: epochs at which lr decays.", range="[0, inf)")
    decay_rate: float = opt(0.1, "Step/multistep/plateau decay factor.", range="(0, 1]")
    patience_epochs: int = opt(10, "Plateau schedule patience.", range="[0, inf)")
    cooldown_epochs: int = opt(0, "Epochs at min_lr after the schedule ends.", range="[0, inf)")


@dataclass
class TrainConfig:
    output: Optional[str] = opt(None, "Run folder. Default: a new runs/train, runs/train-2, ... (or, resuming, the "
                                      "folder of the checkpoint). A non-empty one needs --resume or --exist-ok.")
    exist_ok: bool = opt(False, "Start a new run in a non-empty --output (the earlier run's files there are replaced).")
    device: str = opt("auto", "Device: auto, cpu, cuda, cuda:N.")
    amp: str = opt("auto", "Mixed precision: auto (bf16 on CUDA, and on CPUs where a quick timing finds it faster; float32 with --deterministic), none, bf16, fp16 (CUDA only).",
                   choices=("auto", "none", "bf16", "fp16"))
    seed: int = opt(42, "Random seed.", range="[0, 4294967295]")
    deterministic: bool = opt(False, "Deterministic algorithms (slower) for exact reproducibility.")
    resume: Optional[str] = opt(None, "Resume: auto (last.pt in --output if present) or a checkpoint path.")
    ema: bool = opt(True, "Keep an exponential moving average of the weights (evaluated and saved).")
    ema_decay: float = opt(0.999, "EMA decay per optimizer step.", range="[0, 1]")
    eval_every: int = opt(1, "Evaluate every N epochs.", range="[1, inf)")
    save_every_steps: int = opt(0, "Also save last.pt every N optimizer steps (0: once per epoch).", range="[0, inf)")
    keep_top_k: int = opt(1, "Keep the k best checkpoints (best.pt plus best-2.pt ...).", range="[1, inf)")
    best_metric: str = opt("top1", "Metric that selects best.pt.", choices=("top1", "top5", "loss", "ema_top1"))
    early_stop: int = opt(0, "Stop after N evaluations without improvement (0: off).", range="[0, inf)")
    log_every: int = opt(20, "Log to log.jsonl / TensorBoard every N steps.", range="[0, inf)")
    log_to: str = opt("tensorboard", "Trackers, comma-separated: tensorboard, mlflow, wandb, or none (MLflow: MLFLOW_TRACKING_URI, default a local sqlite store beside the run; W&B: offline unless logged in or WANDB_MODE says otherwise).")
    max_steps: Optional[int] = opt(None, "Stop after this many optimizer steps (smoke tests).", range="[1, inf)")
    dist_timeout: int = opt(1800, "Seconds a distributed collective waits for a stuck or lost peer before failing.", range="[1, inf)")


@dataclass
class DistillConfig:
    teacher: Optional[str] = opt(None, "Teacher: an fvt checkpoint, or a timm model name (with --teacher-weights).")
    teacher_weights: Optional[str] = opt(None, "Weights for a teacher given by model name: a file, official, hf-hub:OWNER/REPO[:FILE] or https://URL.")
    distill: str = opt("soft", "Distillation type.", choices=("soft", "hard"))
    distill_alpha: float = opt(0.5, "Weight of the distillation loss.", range="[0, 1]")
    distill_tau: float = opt(1.0, "Softmax temperature for soft distillation.", range="(0, inf)")


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "aug": AugConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "train": TrainConfig,
    "distill": DistillConfig,
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    # -- lookup -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        return {k: v for sec in self.to_dict().values() for k, v in sec.items()}

    def set(self, key: str, value: Any) -> None:
        section = FIELD_SECTION.get(key)
        if section is None:
            raise UsageError(_unknown(key))
        setattr(getattr(self, section), key, coerce(key, value))

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict, base: Optional["Config"] = None) -> "Config":
        cfg = base if base is not None else cls()
        for key, value in (d or {}).items():
            if key in SECTIONS and isinstance(value, dict):
                for k, v in value.items():
                    if FIELD_SECTION.get(k) != key:
                        raise UsageError(_unknown(k, where=f"section '{key}'"))
                    cfg.set(k, v)
            else:
                cfg.set(key, value)
        return cfg

    @classmethod
    def from_yaml(cls, path: Union[str, Path], base: Optional["Config"] = None) -> "Config":
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        except UnicodeDecodeError:
            raise UsageError(f"config file {p} is not a text (UTF-8 YAML) file") from None
        except OSError as e:
            raise UsageError(f"cannot read config file {p}: {e.strerror or e}") from None
        if not isinstance(d, dict):
            raise UsageError(f"config file {p} must hold a mapping of option: value")
        return cls.from_dict(d, base)


def _field_table():
    table, types, fields = {}, {}, {}
    for name, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name not in table, f"duplicate config field {f.name}"
            table[f.name] = name
            types[f.name] = hints[f.name]
            fields[f.name] = f
    return table, types, fields


FIELD_SECTION, FIELD_TYPES, FIELDS = _field_table()


def _unknown(key: str, where: str = "") -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), list(FIELD_SECTION), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    loc = f" in {where}" if where else ""
    return f"unknown config option '{key}'{loc}{hint}"


def coerce(key: str, value: Any) -> Any:
    """Check and convert a value for field ``key``; raise UsageError naming the key."""
    typ = FIELD_TYPES[key]
    optional = get_origin(typ) is Union and type(None) in get_args(typ)
    base = [a for a in get_args(typ) if a is not type(None)][0] if optional else typ
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and base is not str):
        if optional:
            return None
        raise UsageError(f"option '{key}' cannot be none")
    if optional and isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    value = True
                elif value.lower() in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError
            elif not isinstance(value, bool):
                raise ValueError
        elif base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif base is float:
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif base is list:
            value = list(value) if isinstance(value, (list, tuple)) else [value]
            value = [_num(v) for v in value]
        elif base is str:
            value = str(value)
    except (TypeError, ValueError):
        raise UsageError(f"option '{key}' expects {_type_name(base)}, got {value!r}") from None
    choices = FIELDS[key].metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(choice_message("--" + key.replace("_", "-"), value, choices))
    return value


def _num(v):
    if isinstance(v, str):
        try:
            f = float(v)
            return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
        except ValueError:
            return v
    return v


def _type_name(t) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", list: "a list", str: "a string"}.get(t, str(t))


# -- command line -------------------------------------------------------------------
def add_config_arguments(parser, sections=None) -> None:
    """One flag per config field (``img_size`` -> ``--img-size``), grouped by section.

    Defaults are suppressed so that only flags the user typed override the file."""
    import argparse

    for sec_name, cls in SECTIONS.items():
        if sections is not None and sec_name not in sections:
            continue
        group = parser.add_argument_group(f"{sec_name} options")
        for f in dataclasses.fields(cls):
            typ = FIELD_TYPES[f.name]
            flag = "--" + f.name.replace("_", "-")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rng = f.metadata.get("range")
            help_text = f"{f.metadata['help']} [default: {default}{f'; range {rng}' if rng else ''}]"
            kw = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
            if typ is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            elif list in (typ, *get_args(typ)):
                group.add_argument(flag, nargs="+", metavar="V", **kw)
            else:
                choices = f.metadata.get("choices")
                group.add_argument(flag, metavar="|".join(choices) if choices else f.name.upper(), **kw)


def config_from_args(args, base: Optional[Config] = None) -> Config:
    """Default < --config FILE < flags."""
    cfg = base if base is not None else Config()
    if getattr(args, "config", None):
        cfg = Config.from_yaml(args.config, cfg)
    for key in FIELD_SECTION:
        if hasattr(args, key):
            value = getattr(args, key)
            if isinstance(value, list) and len(value) == 1 and FIELD_TYPES[key] is not list and list not in get_args(FIELD_TYPES[key]):
                value = value[0]
            cfg.set(key, value)
    return cfg
