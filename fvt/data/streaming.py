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

import io
import json
import os
import random
import re
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError
from .dataset import ImageDataset, collate_drop_failed, seed_everything_from
from .decode import ImageDecodeError, load_image
from .samplers import EpochPosition
from .shards import FORMAT, INDEX_NAME, require_webdataset

_SHARD_NAME = re.compile(r"[^/\s]*\.tar")
META_KEYS = ("cls", "path.txt")


# -- finding the shards ----------------------------------------------------------------------
def is_shard_spec(spec: Any) -> bool:
    """Whether ``--data`` names shards rather than an image folder or CSV."""
    if spec is None:
        return False
    s = str(spec)
    if s.startswith(("pipe:", "http://", "https://")) or ".tar" in s:
        return True
    p = Path(s).expanduser()
    index = p if p.name == INDEX_NAME else p / INDEX_NAME
    if not index.is_file():
        return False
    try:
        return json.loads(index.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_text(url: str) -> str:
    wds = require_webdataset()
    try:
        with wds.gopen(url) as f:
            return f.read().decode("utf-8")
    except Exception as e:  # gopen raises OSError / IOError / ValueError per scheme
        raise DataError(f"cannot read {url} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"fvt data shard writes {INDEX_NAME} beside the shards") from None


class ShardSource:
    """The index of a shard folder and how to build the URL of each shard in it."""

    def __init__(self, spec: str):
        require_webdataset()  # one line naming the extra when it is missing
        self.spec = str(spec)
        s = self.spec
        m = None if (Path(s).expanduser().is_dir() or s.endswith(INDEX_NAME)) else list(_SHARD_NAME.finditer(s))
        if m:  # a pattern / URL / pipe: the shard name is the last '*.tar' token
            last = m[-1]
            self._prefix, self._suffix = s[:last.start()], s[last.end():]
            import braceexpand

            self.selected = set(braceexpand.braceexpand(last.group(0)))
        else:
            folder = Path(s).expanduser()
            folder = folder.parent if folder.name == INDEX_NAME else folder
            self._prefix, self._suffix, self.selected = str(folder) + os.sep, "", None
        self.index_url = self.url(INDEX_NAME)
        try:
            self.index = json.loads(_read_text(self.index_url))
        except ValueError as e:
            raise DataError(f"{self.index_url} is not valid JSON ({e})") from None
        if self.index.get("format") != FORMAT:
            raise DataError(f"{self.index_url} is not an fvt shard index; make one with fvt data shard")
        self.classes: List[str] = list(self.index["classes"])
        self.task: str = self.index.get("task", "multiclass")  # multilabel: cls holds label indices "0;3"

    def url(self, name: str) -> str:
        return f"{self._prefix}{name}{self._suffix}"

    def split(self, name: str, filtered: bool = True) -> Optional[dict]:
        """``{"urls", "counts" (per shard), "count", "paths"}`` of a split, limited to the pattern
        unless ``filtered`` is False."""
        entry = self.index.get("splits", {}).get(name)
        if not entry:
            return None
        shards = [s for s in entry["shards"] if self.selected is None or not filtered or s["name"] in self.selected]
        if not shards:
            return None
        return {"urls": [self.url(s["name"]) for s in shards], "counts": [s["count"] for s in shards],
                "count": sum(s["count"] for s in shards), "paths": entry.get("paths")}

    def training_split(self) -> dict:
        for name in ("train", "val", "test"):  # a pattern may name val shards only: train on what it names
            part = self.split(name)
            if part is not None and (name == "train" or self.selected is not None):
                return part
        raise DataError(f"{self.spec}: no training shards found (index {self.index_url} lists "
                        f"{', '.join(self.index.get('splits', {})) or 'none'})")


# -- reading -----------------------------------------------------------------------------------
def _slot_samples(urls: Sequence[str], slot: int, slots: int) -> Iterator[dict]:
    """The raw samples of one slot: its own shards, or every ``slots``-th sample of all shards."""
    wds = require_webdataset()
    split_samples = len(urls) < slots
    mine = list(urls) if split_samples else list(urls)[slot::slots]
    stream = wds.tarfile_to_samples()(iter([{"url": u} for u in mine]))
    for k, sample in enumerate(stream):
        if not split_samples or k % slots == slot:
            yield sample


def _decode(sample: dict, min_size: Optional[int], num_labels: int = 0, channels: int = 3) -> Tuple[Any, Any, int]:
    """(image, target, index); ``num_labels`` > 0: multi-label shards, the target is a multi-hot vector."""
    if num_labels:
        from .multilabel import decode_target

        target = decode_target(sample["cls"].decode() if isinstance(sample["cls"], bytes) else sample["cls"], num_labels)
    else:
        target = int(sample["cls"])
    index = int(sample["__key__"])
    data = next(v for k, v in sample.items() if not k.startswith("_") and k not in META_KEYS)
    try:
        return load_image(io.BytesIO(data), min_size, channels=channels), target, index
    except ImageDecodeError as e:
        import warnings

        warnings.warn(f"skipping {sample.get('path.txt', b'').decode() or index} in {sample.get('__url__')}: "
                      f"cannot decode ({e})", RuntimeWarning, stacklevel=2)
        return None, target, index


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
        self.transform, self.min_decode_size = transform, min_decode_size
        self.num_labels = len(self.classes) if source.task == "multilabel" else 0
        self.channels = channels
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
            for sample in wds.shuffle(self.shuffle_buffer, min(100, self.shuffle_buffer), rng=rng)(
                    _slot_samples(order, slot, slots)):
                got += 1
                yield sample
            if got == 0:
                raise DataError(f"shards of {self.source} gave no sample to reader {slot} of {slots}")

    def _prepare(self, sample: dict, seed: int):
        img, target, index = _decode(sample, self.min_decode_size, self.num_labels, self.channels)
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
        self.transform, self.min_decode_size = transform, min_decode_size
        self.task, self.channels = source.task, channels
        self.num_labels = len(self.classes) if source.task == "multilabel" else 0
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
        for sample in _slot_samples(self.urls, self.rank * nw + w, self.world_size * nw):
            img, target, index = _decode(sample, self.min_decode_size, self.num_labels, self.channels)
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
                     min_decode_size: Optional[int] = None, channels: int = 3, split: str = "val") -> ShardEvalSet:
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
    return ShardEvalSet(source, part, transform, min_decode_size, channels)


def build_shard_data(cfg: Any, preproc, rank: int = 0):
    """``build_data`` for shards: a ``DataBundle`` whose train set streams and whose val set
    is the index's val split (or ``--val-data`` shards)."""
    import logging

    from .bundle import DataBundle
    from .transforms import eval_transform, train_transform

    source = ShardSource(cfg.data.data)
    part = source.training_split()
    train = ShardTrainSet(source, part, train_transform(preproc, cfg.aug), max(preproc.input_size),
                          getattr(cfg.data, "shuffle_buffer", 1000), preproc.channels)
    eval_tf = eval_transform(preproc)
    if cfg.data.val_data:
        val = open_eval_shards(cfg.data.val_data, eval_tf, source.classes, preproc.min_decode_size, preproc.channels)
    else:
        vpart = source.split("val", filtered=False) or source.split("test", filtered=False)
        if vpart is not None and vpart["urls"] == part["urls"]:
            vpart = None  # a pattern naming the val shards for training: nothing left to validate on
        val = ShardEvalSet(source, vpart, eval_tf, preproc.min_decode_size, preproc.channels) if vpart else None
    tpart = source.split("test", filtered=False) if source.split("val", filtered=False) else None  # else val is test
    test = ShardEvalSet(source, tpart, eval_tf, preproc.min_decode_size, preproc.channels) if tpart else None
    index = source.index
    counts = {name: {c: n for c, n in entry["counts"].items()} for name, entry in index["splits"].items()}
    if index.get("bad_files") and rank == 0:
        logging.getLogger("fvt.data").warning(
            f"{index['bad_files']} bad files were left out when the shards were written (see bad_files.txt "
            f"beside {source.index_url})")
    return DataBundle(train, val, test, source.classes, preproc, "shards", Path(source.spec), counts,
                      task=source.task)
