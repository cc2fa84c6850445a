"""The image dataset and the batch collation that drops files failing mid-epoch.

``ImageDataset[key]`` takes an index, or an ``(index, sample_seed)`` pair from a training
sampler (``(index, sample_seed, size)`` under progressive resizing: ``transform_at(size)`` then
replaces ``transform``): python ``random``, numpy and torch are then seeded from ``sample_seed`` before the
transform runs, so a sample's augmentation depends only on (seed, epoch, position) -- not on
the number of workers, and not on where a resumed run restarted. In the main process
(``workers=0``) the RNG states are restored afterwards so the training loop's own random
streams (dropout, drop-path, mixup) stay untouched, and the transform runs on one thread.

Items are ``(image, target, index)``. A file that fails to decode yields ``(None, target,
index)``: ``collate_drop_failed`` removes it from the batch, the failure is reported once per
process and appended to ``bad_files.txt`` once per file (across workers, epochs and evaluations:
the file is the record), and that first report is printed on stderr, as one ``fvt: warning:`` line,
by whichever process met it. A batch whose every file failed collates to ``None`` (the caller skips it).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from .channels import load_image
from .decode import ImageDecodeError
from .scan import append_bad_file

Sample = Tuple[Path, int]


def seed_everything_from(sample_seed: int) -> None:
    random.seed(sample_seed)
    np.random.seed(sample_seed % (2 ** 32))
    # The CPU generator only: torch.manual_seed also queues CUDA/XPU/MTIA seeding, each with a
    # captured stack trace (~2 ms per image); augmentation never draws from device RNGs.
    torch.default_generator.manual_seed(sample_seed)


class ImageDataset(Dataset):
    """``samples``: (path, class index) pairs; ``classes``: the class names in index order."""

    task = "multiclass"

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], transform: Optional[Callable] = None,
                 bad_file_log: Optional[Union[str, Path]] = None, min_decode_size: Optional[int] = None,
                 channels: int = 3):
        self.samples: List[Sample] = [(Path(p), int(t)) for p, t in samples]
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform
        self.bad_file_log = Path(bad_file_log) if bad_file_log else None
        self.min_decode_size = min_decode_size  # lets JPEG draft mode shrink large photos on decode
        self.cache = None  # fvt.data.cache.ImageCache: pixels decoded once (--cache)
        self.transform_at = None  # size -> the training transform at that size (progressive resizing)
        self.channels = channels  # the model's input channels (fvt.data.channels)
        self._warned: set = set()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> List[int]:
        return [t for _, t in self.samples]

    @property
    def paths(self) -> List[Path]:
        return [p for p, _ in self.samples]

    def load(self, index: int):
        """The decoded image of sample ``index``: RGB PIL (or grayscale / bands, see ``channels``);
        raises ``ImageDecodeError``. The --cache holds RGB pixels only (validation refuses it otherwise)."""
        if self.cache is not None:
            return self.cache.image(index)
        return load_image(self.samples[index][0], self.min_decode_size, channels=self.channels)

    def __getitem__(self, key):
        # an index, (index, sample_seed), or (index, sample_seed, size) under progressive resizing
        index, seed, size = (tuple(key) + (None, None))[:3] if isinstance(key, tuple) else (key, None, None)
        path, target = self.samples[index]
        try:
            img = self.load(index)
        except ImageDecodeError as e:
            self._record_failure(path, str(e))
            return None, target, index
        transform = self.transform if size is None else self.transform_at(size)
        if transform is not None:
            if get_worker_info() is not None:  # a DataLoader worker: its RNG and threads are its own
                if seed is not None:
                    seed_everything_from(seed)
                img = transform(img)
            else:
                img = self._transform_in_main_process(img, seed, transform)
        return img, target, index

    def _transform_in_main_process(self, img, seed: Optional[int], transform: Optional[Callable] = None):
        # Keep the training loop's RNG streams as they were, and run the small per-image tensor
        # ops single-threaded: intra-op threads on a busy CPU made them 20x slower (measured).
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if seed is not None else None
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            if seed is not None:
                seed_everything_from(seed)
            return (transform or self.transform)(img)
        finally:
            torch.set_num_threads(threads)
            if states is not None:
                random.setstate(states[0])
                np.random.set_state(states[1])
                torch.set_rng_state(states[2])

    def _record_failure(self, path: Path, reason: str) -> None:
        report_failure(path, f"cannot decode ({reason})", self.bad_file_log, self._warned)


def report_failure(where: Union[str, Path], reason: str, bad_file_log: Optional[Union[str, Path]],
                   warned: set) -> None:
    """Say once that ``where`` (a file, or a shard sample) is skipped, and why: once per process (``warned``),
    and once per run across workers, epochs and evaluations when ``bad_file_log`` (bad_files.txt) is the
    record. In the main process it is a RuntimeWarning shown as one line; a worker writes the line itself."""
    if where in warned:
        return
    warned.add(where)
    first = True
    if bad_file_log is not None:
        try:
            first = append_bad_file(bad_file_log, where, f"failed mid-run: {reason}")
        except OSError:
            pass
    if not first:  # another worker, epoch or evaluation reported it already
        return
    msg = f"skipping {where}: {reason}" + (f"; recorded in {bad_file_log}" if bad_file_log else "")
    # one line, written directly: a Python warning prints two (its location, then the calling source line),
    # and a worker's warnings may be filtered or lost
    print(f"fvt: warning: {msg}", file=sys.stderr, flush=True)


def collate_drop_failed(batch):
    """``default_collate`` over the items whose image decoded; ``None`` if none did."""
    kept = [b for b in batch if b[0] is not None]
    if not kept:
        return None
    if get_worker_info() is not None:
        return default_collate(kept)
    threads = torch.get_num_threads()
    try:  # as for the transforms: one thread is much faster than two fighting a busy CPU
        torch.set_num_threads(1)
        return default_collate(kept)
    finally:
        torch.set_num_threads(threads)
