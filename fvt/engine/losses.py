"""The loss of a run and its batch mixing, by task.

* multi-class: cross-entropy with ``--smoothing``, or timm's soft-target cross-entropy when timm's
  Mixup/CutMix mixes the batch (label smoothing is then folded into its soft targets);
* multi-label: one sigmoid per label with binary cross-entropy (``--multilabel-loss bce``, optional
  ``--pos-weight balanced``) or timm's asymmetric loss (``asymmetric``, Ridnik et al. 2021), and
  Mixup/CutMix on multi-hot targets: the mixed target of an image is the same mixture of its two
  source images' label vectors as the pixels. ``--smoothing`` applies to multi-class targets only.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

MAX_POS_WEIGHT = 100.0  # a label seen once in 10,000 images would otherwise dominate every batch's loss


def build_criterion(cfg: Any, data: Any, device: Optional[torch.device] = None) -> Tuple[Any, Any]:
    """(criterion, mixup or None) for ``data`` (a DataBundle: its task, classes and label counts)."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from ..data.loaders import build_mixup

    if getattr(data, "task", "multiclass") == "multilabel":
        return multilabel_criterion(cfg, data, device), multilabel_mixup(cfg.aug)
    mixup = build_mixup(cfg.aug, len(data.classes))
    if mixup is not None:
        return SoftTargetCrossEntropy(), mixup
    if cfg.aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(cfg.aug.smoothing), mixup
    return torch.nn.CrossEntropyLoss(), mixup


class AsymmetricLoss(torch.nn.Module):
    """timm's ``AsymmetricLossMultiLabel`` divided by the number of label decisions: timm returns the
    sum, which would scale the gradient with batch size and label count; the mean keeps the learning
    rates of a BCE recipe."""

    def __init__(self, gamma_neg: float, gamma_pos: float, clip: float):
        super().__init__()
        from timm.loss import AsymmetricLossMultiLabel

        self.asl = AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.asl(logits, target) / max(logits.numel(), 1)


def positive_weights(data: Any) -> torch.Tensor:
    """Per label: training images without it / images with it, capped at ``MAX_POS_WEIGHT`` (1 for a
    label with no training image)."""
    counts = (getattr(data, "counts", {}) or {}).get("train", {})
    n = getattr(data.train, "n", None) or len(data.train)
    pos = torch.tensor([float(counts.get(c, 0)) for c in data.classes])
    w = torch.where(pos > 0, (n - pos) / pos.clamp(min=1), torch.ones_like(pos))
    return w.clamp(min=1e-3, max=MAX_POS_WEIGHT)


def multilabel_criterion(cfg: Any, data: Any, device: Optional[torch.device] = None) -> torch.nn.Module:
    m = cfg.multilabel
    if m.multilabel_loss == "asymmetric":
        return AsymmetricLoss(m.asl_gamma_neg, m.asl_gamma_pos, m.asl_clip)
    weight = positive_weights(data).to(device or "cpu") if m.pos_weight == "balanced" else None
    return torch.nn.BCEWithLogitsLoss(pos_weight=weight)


class MultiLabelMixup:
    """timm Mixup/CutMix for multi-hot targets. timm mixes one-hot targets; asked to mix the one-hot
    rows of the images' own positions (``num_classes`` = batch size), its soft target is the mixing
    matrix itself (row i: how much of each image went into image i), and that matrix times the label
    matrix mixes the label vectors exactly as the pixels, in every timm mode (batch, pair, elem)."""

    def __init__(self, mixup):
        self.mixup = mixup

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        self.mixup.num_classes = len(x)
        x, mix = self.mixup(x, torch.arange(len(x), device=x.device))
        return x, mix.to(target.dtype) @ target


def multilabel_mixup(aug_cfg: Any) -> Optional[MultiLabelMixup]:
    if not (aug_cfg.mixup > 0 or aug_cfg.cutmix > 0):
        return None
    from ..data.loaders import OddSafeMixup

    return MultiLabelMixup(OddSafeMixup(mixup_alpha=aug_cfg.mixup, cutmix_alpha=aug_cfg.cutmix, prob=aug_cfg.mixup_prob,
                                        switch_prob=aug_cfg.mixup_switch_prob, mode=aug_cfg.mixup_mode,
                                        label_smoothing=0.0, num_classes=2))
