"""Real images for an export's calibration and check: ``--data``, else the run's validation split."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import DataError
from .loading import LoadedModel


def _dataset(loaded: LoadedModel, data: Optional[str]):
    from ..data import load_eval_set
    from ..data.evalsets import image_folder
    from ..data.transforms import Preprocessing, eval_transform

    pre = Preprocessing.from_dict(loaded.preprocessing)
    if data is not None:
        return image_folder(data, eval_transform(pre), None, pre.min_decode_size, pre.channels, loaded.task), str(data)
    config = loaded.info.get("config")
    if not config:
        return None, None
    source = Path(loaded.info.get("source", "."))
    try:
        return (load_eval_set(config, run_dir=source.parent, preprocessing=loaded.preprocessing,
                              classes=loaded.classes), "the run's validation split")
    except (DataError, OSError) as e:
        print(f"fvt: warning: the run's validation split is not usable here ({e})", file=sys.stderr)
        return None, None


def check_batches(loaded: LoadedModel, data: Optional[str], count: int, batch_size: Optional[int] = 32,
                  workers: int = 0) -> Tuple[Optional[List[torch.Tensor]], str]:
    """Up to ``count`` preprocessed images spread evenly over the set, as float batches."""
    from ..data.loaders import build_eval_loader

    if not loaded.is_torch or count < 1:
        return None, ""
    ds, where = _dataset(loaded, data)
    if ds is None:
        print("fvt: warning: no images to check the export on (pass --data DIR): "
              "checking on random inputs, and int8 calibration has nothing to calibrate on", file=sys.stderr)
        return None, "random inputs"
    keep = np.unique(np.linspace(0, len(ds) - 1, min(count, len(ds))).round().astype(int))
    ds.samples = [ds.samples[i] for i in keep]
    loader = build_eval_loader(ds, batch_size or 32, workers=workers)
    batches = [b[0] for b in loader if b is not None]
    if not batches:
        raise DataError(f"none of the images in {where} could be read")
    return batches, f"images from {where}"
