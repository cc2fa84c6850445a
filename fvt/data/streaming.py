"""Reading shards written by ``fvt data shard``: training streams and evaluation sets.

``--data`` may name the shard folder (holding ``index.json``), the index file, a brace pattern
(``shards/train-{000000..000099}.tar``), an ``http(s)://`` URL or a ``pipe:`` command (object
stores: ``pipe:aws s3 cp s3://bucket/shards/train-{000000..000099}.tar -``). The index is
always read from beside the shards (the shard file name replaced by ``index.json``); it gives
the classes and the sample counts, so the number of steps per epoch is known up front.

Training (``ShardTrainSet.train_loader``): the shards are spread over "slots" -- one slot per
(rank, DataLoader worker) -- so each slot reads distinct shards; with fewer shards than slots
every slot reads all shards and keeps every n-th sample instead. The shard order is a fresh
permutation each epoch (from ``seed`` and the epoch), and each slot shuffles its samples
through a buffer of ``--shuffle-buffer`` samples (memory: that many encoded images per worker,
independent of the dataset size). Every rank takes ``ceil(N / world_size)`` samples per epoch
(the same count as the folder sampler), so every rank takes the same number of steps; a slot
whose shards run out re-reads them in a new order. Worker ``w`` makes batches ``w, w + W, ...``
(the order in which the DataLoader collects them).

Resume: the epoch's stream is a pure function of (seed, epoch, rank, world size, workers), and
``set_start(n)`` skips the consumed samples without decoding them. So a resume is always
correct at an epoch boundary, and exact (the same samples in the same batches) mid-epoch
when the world size and worker count are unchanged and the step lies on a multiple of the
worker count; otherwise the rest of the epoch keeps its length but not its exact samples.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError
from .dataset import ImageDataset, collate_drop_failed, seed_everything_from
from .samplers import EpochPosition
from .shard_source import (ShardSource, _decode, _read_text, _slot_samples, first_samples,  # noqa: F401 (re-exported)
                           is_shard_spec, sample_fields)
from .shards import require_webdataset

def _worker() -> Tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ShardTrainSet(EpochPosition, IterableDataset):
    """A training stream with the sampler interface the trainer drives (``set_epoch``,
    ``set_start``, ``epoch_length``, ``state_dict``); ``len()`` = samples left this epoch."""

    is_shard_stream = True

    def __init__(self, source: ShardSource, part: dict, transform, min_decode_size: Optional[int] = None,
                 shuffle_buffer: int = 1000, channels: int = 3):
        self.source, self.urls, self.shard_counts = source.spec, part["urls"], part["counts"]
        self.n, self.classes = part["count"], source.classes
        self.multilabel, self.channels = source.task == "multilabel", channels
        self.transform, self.min_decode_size = transform, min_decode_size
        self.bad_file_log = None  # the run's bad_files.txt, where unusable samples are listed
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.rank, self.world_size, self.seed, self.batch_size, self.workers = 0, 1, 0, 1, 0
        self.epoch, self.start = 0, 0
        self._main = ImageDataset([], self.classes, transform)  # its RNG-preserving transform runner

    # -- the sampler interface ------------------------------------------------------------------
    def configure(self, rank: int, world_size: int, seed: int, batch_size: int, workers: int) -> None:
        self.rank, self.world_size, self.seed = rank, world_size, int(seed)
        self.batch_size, self.workers = max(1, int(batch_size)), max(0, int(workers))

    def epoch_length(self) -> int:
        return -(-self.n // self.world_size)

    def batch_sizes(self) -> List[int]:
        per_rank, bs = self.epoch_length(), self.batch_size
        sizes = [bs] * (per_rank // bs) + ([per_rank % bs] if per_rank % bs else [])
        if len(sizes) > 1 and sizes[-1] == 1 and bs > 1:
            sizes.pop()  # a last batch of one sample: BatchNorm cannot train on it (as TrainBatchSampler)
        return sizes


    def __len__(self) -> int:
        return max(0, sum(self.batch_sizes()) - self.start)

    def num_batches(self) -> int:
        return max(0, len(self.batch_sizes()) - self.start // self.batch_size)

    # -- the stream ---------------------------------------------------------------------------------
    def _samples(self, slot: int, slots: int) -> Iterator[dict]:
        """Endless: the slot's shards in this epoch's order, shuffled through the buffer; re-read in
        a new order when they run out."""
        wds = require_webdataset()
        for rnd in range(1 << 30):
            order = list(self.urls)
            random.Random(f"{self.seed}:{self.epoch}:{rnd}").shuffle(order)
            rng = random.Random(f"{self.seed}:{self.epoch}:{rnd}:{slot}")
            got = 0
            counts = [dict(zip(self.urls, self.shard_counts))[u] for u in order]
            for sample in wds.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)(
                    _slot_samples(order, slot, slots, counts, self.bad_file_log)):
                got += 1
                yield sample
            if got == 0:
                raise DataError(f"shards of {self.source} gave no sample to reader {slot} of {slots}")

    def _prepare(self, sample: dict, seed: int):
        img, target, index = _decode(sample, self.min_decode_size, len(self.classes), bad_log=self.bad_file_log,
                                     multilabel=self.multilabel, channels=self.channels)
        if img is not None and self.transform is not None:
            if get_worker_info() is not None:
                seed_everything_from(seed)
                img = self.transform(img)
            else:
                img = self._main._transform_in_main_process(img, seed)
        return img, target, index

    def __iter__(self):
        w, nw = _worker()
        slot, slots = self.rank * nw + w, self.world_size * nw
        sizes, first = self.batch_sizes(), self.start // self.batch_size
        skip = sum(s for i, s in enumerate(sizes[:first]) if i % nw == w)
        mine = [s for i, s in enumerate(sizes) if i >= first and (i - first) % nw == w]
        stream = self._samples(slot, slots)
        seeds = random.Random(f"{self.seed}:{self.epoch}:{slot}:seeds")
        for _ in range(skip):  # consumed before a mid-epoch resume: read, not decoded
            next(stream)
            seeds.randrange(2 ** 31 - 1)
        for size in mine:
            yield collate_drop_failed([self._prepare(next(stream), seeds.randrange(2 ** 31 - 1))
                                       for _ in range(size)])

    def train_loader(self, cfg: Any, rank: int, world_size: int, seed: int,
                     pin_memory: Optional[bool] = None) -> "ShardTrainLoader":
        self.configure(rank, world_size, seed, cfg.data.batch_size, cfg.data.workers)
        return ShardTrainLoader(self, pin_memory)


class _BatchSamplerView:
    def __init__(self, sampler):
        self.sampler = sampler


class ShardTrainLoader:
    """What the trainer needs of a DataLoader: ``len()`` (batches left this epoch), iteration,
    ``train_sampler`` and ``batch_sampler.sampler``. Workers start per epoch, so each gets the
    epoch and start position of that moment."""

    def __init__(self, stream: ShardTrainSet, pin_memory: Optional[bool] = None):
        self.train_sampler = stream
        self.batch_sampler = _BatchSamplerView(stream)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def __len__(self) -> int:
        return self.train_sampler.num_batches()

    def __iter__(self):
        s = self.train_sampler
        kw = dict(prefetch_factor=4) if s.workers > 0 else {}
        return iter(DataLoader(s, batch_size=None, num_workers=s.workers, pin_memory=self.pin_memory, **kw))


class ShardEvalSet(IterableDataset):
    """A split read once, in order, each sample on exactly one (rank, worker); items are batches
    ``(images, targets, indices)`` with indices = position in the split (``paths[i]``)."""

    def __init__(self, source: ShardSource, part: dict, transform, min_decode_size: Optional[int] = None,
                 channels: int = 3):
        self.source, self.urls, self.n, self.classes = source, part["urls"], part["count"], source.classes
        self.task, self.channels = source.task, channels
        self.transform, self.min_decode_size = transform, min_decode_size
        self.counts, self.bad_file_log = part["counts"], None
        self._paths_name, self._paths = part.get("paths"), None
        self.rank, self.world_size, self.batch_size = 0, 1, 64

    def __len__(self) -> int:
        return self.n

    @property
    def paths(self) -> List[str]:
        if self._paths is None:
            names = _read_text(self.source.url(self._paths_name)).splitlines() if self._paths_name else []
            self._paths = names if names else [f"{self.source.spec}#{i}" for i in range(self.n)]
        return self._paths

    def __iter__(self):
        w, nw = _worker()
        batch = []
        for sample in _slot_samples(self.urls, self.rank * nw + w, self.world_size * nw, self.counts,
                                    self.bad_file_log):
            img, target, index = _decode(sample, self.min_decode_size, len(self.classes), self.n, self.bad_file_log,
                                         self.task == "multilabel", self.channels)
            batch.append((self.transform(img) if img is not None and self.transform else img, target, index))
            if len(batch) == self.batch_size:
                yield collate_drop_failed(batch) or _empty_batch()
                batch = []
        if batch:
            yield collate_drop_failed(batch) or _empty_batch()

    def eval_loader(self, batch_size: int, workers: int = 0, rank: int = 0, world_size: int = 1,
                    pin_memory: Optional[bool] = None) -> DataLoader:
        self.rank, self.world_size, self.batch_size = rank, world_size, max(1, int(batch_size))
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        return DataLoader(self, batch_size=None, num_workers=max(0, int(workers)), pin_memory=pin)


def _empty_batch():
    return torch.zeros(0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)


# -- the data stage's entry points ---------------------------------------------------------------
def open_eval_shards(spec: str, transform, classes: Optional[Sequence[str]] = None,
                     min_decode_size: Optional[int] = None, verify: bool = False, channels: int = 3,
                     split: str = "val") -> ShardEvalSet:
    """``fvt eval --data SHARDS``: the val split of a shard folder (else test, else train), or
    exactly the shards a pattern names."""
    source = ShardSource(spec)
    part = None
    for name in dict.fromkeys((split, "val", "test", "train")):
        part = source.split(name)
        if part is not None:
            break
    if part is None:
        raise DataError(f"{spec}: the pattern matches no shard listed in {source.index_url}")
    if classes is not None and list(classes) != source.classes:
        raise DataError(f"classes of {spec} ({', '.join(source.classes)}) differ from the checkpoint's "
                        f"({', '.join(classes)})")
    source.check_shards(part, verify)
    return ShardEvalSet(source, part, transform, min_decode_size, channels)


def build_shard_data(cfg: Any, preproc, rank: int = 0, run_dir: Optional[Any] = None):
    """``build_data`` for shards: a ``DataBundle`` whose train set streams and whose val set
    is the index's val split (or ``--val-data`` shards)."""
    import logging

    from .bundle import DataBundle
    from .transforms import eval_transform, train_transform

    verify = bool(getattr(cfg.data, "verify_images", False))  # --verify-images: also each shard's sha256
    source = ShardSource(cfg.data.data)
    part = source.training_split()
    source.check_shards(part, verify)
    train = ShardTrainSet(source, part, train_transform(preproc, cfg.aug), max(preproc.input_size),
                          getattr(cfg.data, "shuffle_buffer", 1000), preproc.channels)
    eval_tf = eval_transform(preproc)
    if cfg.data.val_data:
        val = open_eval_shards(cfg.data.val_data, eval_tf, source.classes, preproc.min_decode_size, verify,
                               preproc.channels)
    else:
        vpart = source.split("val", filtered=False) or source.split("test", filtered=False)
        if vpart is not None and vpart["urls"] == part["urls"]:
            vpart = None  # a pattern naming the val shards for training: nothing left to validate on
        if vpart is not None:
            source.check_shards(vpart, verify)
        val = ShardEvalSet(source, vpart, eval_tf, preproc.min_decode_size, preproc.channels) if vpart else None
    tpart = source.split("test", filtered=False) if source.split("val", filtered=False) else None  # else val is test
    if tpart is not None:
        source.check_shards(tpart, verify)
    test = ShardEvalSet(source, tpart, eval_tf, preproc.min_decode_size, preproc.channels) if tpart else None
    if run_dir is not None:  # unusable samples are listed in the run's bad_files.txt, as bad image files are
        for ds in (train, val, test):
            if ds is not None:
                ds.bad_file_log = Path(run_dir) / "bad_files.txt"
    index = source.index
    counts = {name: dict(entry.get("counts") or {}) for name, entry in index["splits"].items()}
    if index.get("bad_files") and rank == 0:
        logging.getLogger("fvt.data").warning(
            f"{index['bad_files']} bad files were left out when the shards were written (see bad_files.txt "
            f"beside {source.index_url})")
    return DataBundle(train, val, test, source.classes, preproc, "shards", Path(source.spec), counts,
                      task=source.task)
