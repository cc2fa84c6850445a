"""Inference over a loader, gathered across ranks, and the classification metrics of a run.

:func:`run_inference` is shared with fvt.evaluation: it returns every sample of the loader
exactly once on every rank (samples a distributed sampler padded in twice are dropped
by their dataset index), sorted by dataset index.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import distributed as D
from .rng import iter_keeping_rng


def autocast_context(device: torch.device, amp_dtype: Optional[torch.dtype]):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader,
    device: torch.device | str = "cpu",
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU), targets and dataset indices for every sample of ``loader``.

    Batches are ``(images, targets, indices)``. Under torchrun each rank sees its shard;
    the results are gathered so every rank returns the full, de-duplicated set."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    logits, targets, indices = [], [], []
    for batch in iter_keeping_rng(loader):
        images, target, index = batch[0], batch[1], batch[2]
        if images.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp_dtype):
            out = model(images)
        logits.append(out.float().cpu())
        targets.append(torch.as_tensor(target).long().cpu())
        indices.append(torch.as_tensor(index).long().cpu())
    model.train(was_training)
    num_classes = logits[0].shape[1] if logits else 0
    logits = torch.cat(logits) if logits else torch.zeros(0, num_classes)
    targets = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    indices = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    if D.get_world_size() > 1:
        # A rank may hold no sample at all: agree on the class count before gathering.
        n_cls = int(D.all_reduce_max(torch.tensor([num_classes])).item())
        logits = logits.reshape(-1, n_cls)
        logits, targets, indices = (D.all_gather_cat(t) for t in (logits, targets, indices))
    order = torch.argsort(indices, stable=True)
    logits, targets, indices = logits[order], targets[order], indices[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]
    return logits[keep], targets[keep], indices[keep]


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """top1 / top5 in percent (top5 only with more than 5 classes), mean cross-entropy, and the
    class-balanced metrics (scikit-learn's balanced accuracy and macro F1, in percent) that
    --best-metric balanced_accuracy / macro_f1 select by."""
    n = int(targets.numel())
    if n == 0:
        return {"top1": 0.0, "loss": float("nan"), "count": 0}
    out = {"loss": float(F.cross_entropy(logits.float(), targets).item()), "count": n}
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    hit = topk == targets[:, None]
    out["top1"] = float(hit[:, 0].float().mean().item() * 100.0)
    if logits.shape[1] > 5:
        out["top5"] = float(hit.any(dim=1).float().mean().item() * 100.0)
    out.update(_balanced_metrics(targets.cpu().numpy(), topk[:, 0].cpu().numpy(), logits.shape[1]))
    return out


def _balanced_metrics(y, pred, num_classes: int) -> dict:
    import warnings

    from sklearn.metrics import balanced_accuracy_score, f1_score

    with warnings.catch_warnings():  # a class absent from this evaluation: sklearn warns, the value stands
        warnings.simplefilter("ignore")
        return {"balanced_accuracy": 100.0 * float(balanced_accuracy_score(y, pred)),
                "macro_f1": 100.0 * float(f1_score(y, pred, labels=list(range(num_classes)), average="macro",
                                                   zero_division=0))}
