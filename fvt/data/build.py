"""The single entry point of the data stage: ``build_data(cfg, run_dir, rank, world_size)``.

Shards written by ``fvt data shard`` are streamed (``streaming``); folders and CSV files are
scanned and split (``pipeline``), multi-label CSVs by ``multilabel_build``. Both return a ``DataBundle``. The data modules import
downhill from here: ``build`` -> ``pipeline`` / ``streaming`` -> ``bundle``, ``dataset``, ... ;
the shard writer (``shards``) reads its source through ``pipeline``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .bundle import DataBundle
from .transforms import Preprocessing


def build_data(cfg: Any, run_dir: Optional[Union[str, os.PathLike, Path]] = None, rank: int = 0,
               world_size: int = 1, default_input_size: Optional[Sequence[int]] = None,
               preprocessing: Optional[Preprocessing] = None, write: bool = True) -> DataBundle:
    """Discover, scan, split and wrap the data of ``cfg`` (a ``fvt.config.Config``).

    ``default_input_size``: the model's own input size, used when ``cfg.model.img_size`` is
    unset. ``write=False`` reads an existing ``split.json`` but writes nothing.
    """
    from .shard_source import is_shard_spec

    if is_shard_spec(cfg.data.data):  # WebDataset shards written by `fvt data shard`: streamed, not scanned
        from .streaming import build_shard_data

        if getattr(cfg.data, "relabel", None):
            from ..errors import UsageError

            raise UsageError("--relabel applies to image folders and CSV files; write the shards again from the "
                             "relabelled data (fvt data shard) instead")
        return build_shard_data(cfg, preprocessing or Preprocessing.from_config(cfg, default_input_size), rank,
                                run_dir if write else None)
    if getattr(cfg.data, "task", "multiclass") != "multiclass":  # label sets per image: fvt.data.multilabel
        from .multilabel_build import build_multilabel_data, resolve_task

        if resolve_task(cfg.data.task, cfg.data.data, cfg.data.val_data) == "multilabel":
            return build_multilabel_data(cfg, run_dir, rank, world_size, default_input_size, preprocessing, write)
    from .pipeline import build_folder_data

    bundle = build_folder_data(cfg, run_dir, rank, world_size, default_input_size, preprocessing, write)
    if getattr(cfg.data, "relabel", None):  # labels fixed by the user (fvt data audit's relabel.csv), folder untouched
        from .relabel import apply_relabel

        apply_relabel(bundle, cfg.data.relabel, Path(run_dir) if run_dir is not None else None, write and rank == 0)
    return bundle
