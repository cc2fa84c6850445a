"""DataLoaders for training and evaluation, and Mixup/CutMix.

``build_train_loader`` batches a training sampler (``cfg.data.sampler``: random, balanced,
repeated) with ``TrainBatchSampler``; the sampler is ``loader.batch_sampler.sampler`` (also
``loader.train_sampler``) for ``set_epoch`` / ``set_start`` / ``state_dict``. Batches are
``(images, targets, indices)``, or ``None`` when every file of a batch failed to decode.

``build_eval_loader`` shards the dataset over ranks with no duplicates; gather
``(logits, targets, indices)`` across ranks to count every image exactly once.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from timm.data import Mixup
from torch.utils.data import DataLoader

from .dataset import ImageDataset, collate_drop_failed
from .samplers import ShardSampler, TrainBatchSampler, make_train_sampler


def _loader_kwargs(workers: int, pin_memory: Optional[bool], seed: int = 0) -> dict:
    workers = max(0, int(workers))
    # An own generator: otherwise every iter(loader) draws from the global torch RNG, which
    # would shift the training loop's random stream by the loader's bookkeeping.
    kw = dict(num_workers=workers, collate_fn=collate_drop_failed, generator=torch.Generator().manual_seed(seed),
              pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory)
    if workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=4)
    return kw


def build_train_loader(data: Any, cfg: Any, rank: int = 0, world_size: int = 1, seed: Optional[int] = None,
                       pin_memory: Optional[bool] = None) -> DataLoader:
    """``data``: a ``DataBundle`` or an ``ImageDataset``. ``seed`` defaults to ``cfg.train.seed``."""
    dataset: ImageDataset = getattr(data, "train", data)
    if hasattr(dataset, "train_loader"):  # shards (fvt.data.streaming): a stream with the sampler interface
        return dataset.train_loader(cfg, rank, world_size, cfg.train.seed if seed is None else seed, pin_memory)
    if dataset is None or len(dataset) == 0:
        raise ValueError("the training set is empty")
    seed = cfg.train.seed if seed is None else seed
    sampler = make_train_sampler(cfg.data.sampler, dataset.targets, rank, world_size, seed, cfg.data.repeats)
    loader = DataLoader(dataset, batch_sampler=TrainBatchSampler(sampler, cfg.data.batch_size),
                        **_loader_kwargs(cfg.data.workers, pin_memory, seed))
    loader.train_sampler = sampler
    return loader


def build_eval_loader(dataset: ImageDataset, batch_size: int, workers: int = 0, rank: int = 0, world_size: int = 1,
                      pin_memory: Optional[bool] = None) -> DataLoader:
    if hasattr(dataset, "eval_loader"):  # shards (fvt.data.streaming): each sample on one rank and worker
        return dataset.eval_loader(batch_size, workers, rank, world_size, pin_memory)
    kw = _loader_kwargs(workers, pin_memory)
    kw["persistent_workers"] = False  # evaluation runs once per epoch; idle workers would hold memory
    return DataLoader(dataset, batch_size=max(1, int(batch_size)), sampler=ShardSampler(len(dataset), rank, world_size),
                      shuffle=False, drop_last=False, **kw)


class OddSafeMixup(Mixup):
    """timm ``Mixup`` that accepts odd batch sizes (a short last batch): the last sample is
    left unmixed (label-smoothed only), the rest are mixed as usual."""

    def __call__(self, x: torch.Tensor, target: torch.Tensor):
        if len(x) % 2 == 0:
            return super().__call__(x, target)
        from timm.data.mixup import mixup_target

        if len(x) == 1:
            return x, mixup_target(target, self.num_classes, 1.0, self.label_smoothing)
        xm, tm = super().__call__(x[:-1], target[:-1])
        tl = mixup_target(target[-1:], self.num_classes, 1.0, self.label_smoothing)
        return torch.cat([xm, x[-1:]]), torch.cat([tm, tl.to(tm.device)])


def build_mixup(aug_cfg: Any, num_classes: int) -> Optional[Mixup]:
    """timm Mixup/CutMix with label smoothing folded into its soft targets, or ``None`` when
    both alphas are 0 (then the loss applies ``aug_cfg.smoothing`` itself)."""
    if not (aug_cfg.mixup > 0 or aug_cfg.cutmix > 0):
        return None
    return OddSafeMixup(mixup_alpha=aug_cfg.mixup, cutmix_alpha=aug_cfg.cutmix, prob=aug_cfg.mixup_prob,
                        switch_prob=aug_cfg.mixup_switch_prob, mode=aug_cfg.mixup_mode,
                        label_smoothing=aug_cfg.smoothing, num_classes=num_classes)
