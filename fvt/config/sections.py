"""The sections of fvt's typed config: one dataclass each, every field declared with ``opt``
(help text, choices, valid range). Field names are unique across sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .fields import opt

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
    relabel: Optional[str] = opt(None, "CSV of path,new_label rows (new_label: a class, drop, or empty to keep; fvt data audit writes a template): labels changed for this run only, the folder is not touched. Copied to RUN/relabel.csv.")
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
    best_metric: str = opt("top1", "Metric that selects best.pt (balanced_accuracy / macro_f1: every class counts the same, for imbalanced data).",
                           choices=("top1", "top5", "loss", "ema_top1", "balanced_accuracy", "macro_f1"))
    class_weights: str = opt("none", "Loss weight per class: none, balanced (n_images / (n_classes * n_class) on the training split, as scikit-learn computes it) or a CSV of class,weight rows. Works with label smoothing and mixup.")
    calibrate: bool = opt(True, "At the end, fit temperature scaling and the abstention threshold on the validation split and store them in best.pt.")
    target_precision: float = opt(0.95, "Abstention: the stored threshold is the lowest top probability at which the validation answers reach this precision.", range="(0, 1]")
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
