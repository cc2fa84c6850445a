"""fvt.data: image folders -> checked, split, augmented batches.

Contract with the engine and evaluation stages (docs/architecture.md):

* ``build_data(cfg, run_dir, rank=0, world_size=1, default_input_size=None) -> DataBundle``
  with ``train`` / ``val`` / ``test`` (``ImageDataset`` or None), ``classes`` (sorted names),
  ``class_to_idx``, ``num_classes``, ``counts``, ``bad_files``, ``duplicates_across``,
  ``preprocessing``. Only rank 0 writes ``RUN/split.json`` and ``RUN/bad_files.txt``; no
  barrier is needed (see ``pipeline``).
* ``Preprocessing`` (input_size (H, W), mean, std, crop_pct, interpolation) with
  ``to_dict`` / ``from_dict``; ``eval_transform(preproc)`` rebuilds the eval pipeline.
* ``build_train_loader(bundle_or_dataset, cfg, rank, world_size, seed)``: batches
  ``(images, targets, indices)`` -- or ``None`` when every file of a batch failed to decode
  (skip it); a batch can be smaller than ``batch_size`` only at the end of an epoch or when a
  file failed mid-epoch. The sampler (``loader.train_sampler``) yields
  ``(index, sample_seed)`` and has ``set_epoch(e)`` then ``set_start(n)`` for exact resume,
  and ``state_dict()``. A trailing batch of one sample is dropped, nothing else.
* ``build_eval_loader(dataset, batch_size, workers, rank, world_size)``: each index on exactly
  one rank; gather ``(logits, targets, indices)``.
* ``build_mixup(aug_cfg, num_classes)``: timm Mixup (odd batches allowed) with label smoothing
  folded in, or None.
* ``load_eval_set(config_dict, run_dir, data_override=None, preprocessing, classes)``,
  ``image_folder(dir, transform, classes)``, ``expand_image_paths(paths)`` for eval/predict.

Imported on first use, so ``fvt data --help`` loads without torch.
"""

import typing as _typing

from .._lazy import lazy_attributes as _lazy_attributes

_LAZY = {
    "ImageDataset": ".dataset", "collate_drop_failed": ".dataset",
    "IMAGE_EXTENSIONS": ".decode", "ImageDecodeError": ".decode", "load_image": ".channels", "load_rgb": ".decode",
    "expand_image_paths": ".evalsets", "image_folder": ".evalsets", "load_eval_set": ".evalsets",
    "build_eval_loader": ".loaders", "build_mixup": ".loaders", "build_train_loader": ".loaders",
    "build_data": ".build", "DataBundle": ".bundle", "stratified_split": ".pipeline",
    "BalancedSampler": ".samplers", "RandomSampler": ".samplers", "RASampler": ".samplers",
    "ShardSampler": ".samplers", "TrainBatchSampler": ".samplers", "TrainSampler": ".samplers",
    "make_train_sampler": ".samplers",
    "check_image": ".scan", "find_duplicates": ".scan", "scan_files": ".scan",
    "Preprocessing": ".transforms", "eval_transform": ".transforms", "make_posterize_safe": ".transforms",
    "train_transform": ".transforms",
}

__all__ = [
    "build_data", "DataBundle", "Preprocessing", "eval_transform", "train_transform", "make_posterize_safe",
    "build_train_loader", "build_eval_loader", "build_mixup", "load_eval_set", "image_folder",
    "expand_image_paths", "ImageDataset", "collate_drop_failed", "load_image", "load_rgb", "ImageDecodeError",
    "IMAGE_EXTENSIONS", "check_image", "scan_files", "find_duplicates", "stratified_split", "TrainSampler",
    "RandomSampler", "BalancedSampler", "RASampler", "ShardSampler", "TrainBatchSampler", "make_train_sampler",
]

if _typing.TYPE_CHECKING:
    from .build import build_data  # noqa: F401
    from .bundle import DataBundle  # noqa: F401
    from .dataset import ImageDataset, collate_drop_failed  # noqa: F401
    from .channels import load_image  # noqa: F401
    from .decode import IMAGE_EXTENSIONS, ImageDecodeError, load_rgb  # noqa: F401
    from .evalsets import expand_image_paths, image_folder, load_eval_set  # noqa: F401
    from .loaders import build_eval_loader, build_mixup, build_train_loader  # noqa: F401
    from .pipeline import stratified_split  # noqa: F401
    from .samplers import (BalancedSampler, RandomSampler, RASampler, ShardSampler, TrainBatchSampler,  # noqa: F401
                           TrainSampler, make_train_sampler)
    from .scan import check_image, find_duplicates, scan_files  # noqa: F401
    from .transforms import Preprocessing, eval_transform, make_posterize_safe, train_transform  # noqa: F401

__getattr__, __dir__ = _lazy_attributes(globals(), _LAZY)
