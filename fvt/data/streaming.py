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
    """Whether ``--data`` names shards rather than an image folder or CSV: a pattern / URL / pipe, an
    ``index.json`` (readable or not: a broken one is reported as such, not as an empty image folder), or
    a folder of ``fvt data shard`` files whose index is missing."""
    if spec is None:
        return False
    s = str(spec)
    if s.startswith(("pipe:", "http://", "https://")) or ".tar" in s:
        return True
    p = Path(s).expanduser()
    if p.name == INDEX_NAME or (p / INDEX_NAME).is_file():
        return True
    return p.is_dir() and any(p.glob("train-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))


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
        if not self._prefix.startswith(("pipe:", "http://", "https://")) and not Path(self.index_url).is_file():
            raise DataError(f"{self.index_url} is missing: fvt data shard writes it beside the shards (copy it with "
                            f"them, or shard the images again)")
        try:
            self.index = json.loads(_read_text(self.index_url))
        except ValueError as e:
            raise DataError(f"{self.index_url} is not valid JSON ({str(e).splitlines()[0]}): it is damaged; copy it "
                            f"again or shard the images again") from None
        problem = index_problem(self.index)
        if problem:
            raise DataError(f"{self.index_url} is not a usable fvt shard index ({problem}); make one with fvt data shard")
        self.classes: List[str] = list(self.index["classes"])
        self.task: str = self.index.get("task", "multiclass")  # multilabel: cls holds label indices "0;3"
        self.local = not self._prefix.startswith(("pipe:", "http://", "https://"))

    def url(self, name: str) -> str:
        return f"{self._prefix}{name}{self._suffix}"

    def check_shards(self, part: dict, verify: bool = False) -> None:
        """Local shards: each present with the size index.json records (and, with ``verify``, its sha256),
        so a shard cut short or changed is one line before training rather than samples silently missing."""
        if not self.local:
            return  # remote shards: counted while read (a short one is reported then)
        for entry in part["entries"]:
            path = Path(self.url(entry["name"]))
            if not path.is_file():
                raise DataError(f"shard {path} is missing (listed in {self.index_url})")
            size = path.stat().st_size
            if size != entry.get("bytes", size):
                raise DataError(f"shard {path} is {size} bytes, {self.index_url} says {entry['bytes']}: it was cut "
                                f"short or changed; copy it again (or shard the images again)")
            if verify and entry.get("sha256") and _file_sha256(path) != entry["sha256"]:
                raise DataError(f"shard {path} does not match the sha256 in {self.index_url}: it is corrupt; copy it "
                                f"again (or shard the images again)")

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
                "count": sum(s["count"] for s in shards), "paths": entry.get("paths"), "entries": shards}

    def training_split(self) -> dict:
        for name in ("train", "val", "test"):  # a pattern may name val shards only: train on what it names
            part = self.split(name)
            if part is not None and (name == "train" or self.selected is not None):
                return part
        raise DataError(f"{self.spec}: no training shards found (index {self.index_url} lists "
                        f"{', '.join(self.index.get('splits', {})) or 'none'})")


def index_problem(index: Any) -> str:
    """What makes a parsed index.json unusable ("" when nothing does)."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        return f"its format is not {FORMAT}"
    classes = index.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "no list of class names"
    splits = index.get("splits")
    if not isinstance(splits, dict):
        return "no splits"
    for name, entry in splits.items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not all(
                isinstance(x, dict) and isinstance(x.get("name"), str) and "/" not in x["name"]
                and isinstance(x.get("count"), int) and x["count"] >= 0 for x in shards):
            return f"split {name!r} lists no shards (name, count)"
        if not isinstance(entry.get("counts", {}), dict):
            return f"split {name!r} has no counts per class"
    return ""


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- reading -----------------------------------------------------------------------------------
def _shard_samples(url: str, expected: Optional[int], bad_log=None) -> Iterator[dict]:
    """The samples of one shard; a shard that breaks off (cut short, not a tar) or holds fewer samples
    than index.json says is reported once, and reading goes on with the next shard."""
    wds = require_webdataset()
    got = 0
    stream = wds.tarfile_to_samples()(iter([{"url": url}]))
    try:
        for sample in stream:
            got += 1
            yield sample
    except Exception as e:  # tarfile / webdataset / gopen errors of a damaged or vanished shard
        report_bad_sample(url, f"unreadable after {got} samples ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''}); its other samples are skipped",
                          bad_log)
        return
    finally:
        stream.close()  # a reader stopped early (end of epoch, a sample grid) closes its shard file now
    if expected is not None and got < expected:
        report_bad_sample(url, f"holds {got} samples, index.json says {expected}: the shard is cut short", bad_log)


def _slot_samples(urls: Sequence[str], slot: int, slots: int, counts: Optional[Sequence[int]] = None,
                  bad_log=None) -> Iterator[dict]:
    """The raw samples of one slot: its own shards, or every ``slots``-th sample of all shards."""
    split_samples = len(urls) < slots
    expected = dict(zip(urls, counts)) if counts is not None else {}
    mine = list(urls) if split_samples else list(urls)[slot::slots]
    k = 0
    for url in mine:
        for sample in _shard_samples(url, expected.get(url), bad_log):
            if not split_samples or k % slots == slot:
                yield sample
            k += 1


def sample_fields(sample: dict, n_classes: int, n_samples: Optional[int] = None,
                  multilabel: bool = False) -> Tuple[Any, Any, int, str]:
    """(image bytes, target, sample index, problem) of a raw shard sample; problem is "" for a sample
    as fvt data shard writes it (NNNNNNNN.<ext>, NNNNNNNN.cls holding a class index, one image).
    ``multilabel``: the .cls holds label indices joined by ';' and the target is a multi-hot vector."""
    key = sample.get("__key__")
    if not isinstance(key, str) or not key.isdigit():
        return None, -1, -1, f"member {str(key)[:80]!r} is not a sample of fvt data shard (NNNNNNNN.<ext>)"
    index = int(key)
    if n_samples is not None and index >= n_samples:
        return None, -1, index, f"sample number {index} is beyond the {n_samples} samples index.json lists"
    raw = sample.get("cls")
    if multilabel:
        return _label_set_fields(sample, raw, n_classes, index)
    try:
        target = int(raw.decode("ascii").strip()) if isinstance(raw, bytes) else int(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None, -1, index, f"label {raw!r:.30} is not a class index"
    if not 0 <= target < n_classes:
        return None, -1, index, f"label {target} is not one of the {n_classes} classes (0..{n_classes - 1}) of index.json"
    images = [v for k, v in sample.items() if not k.startswith("_") and k not in META_KEYS]
    if len(images) != 1 or not isinstance(images[0], bytes):
        return None, -1, index, f"holds {len(images)} image members, not one"
    return images[0], target, index, ""


def _label_set_fields(sample: dict, raw: Any, n_classes: int, index: int) -> Tuple[Any, Any, int, str]:
    from .multilabel import LABEL_SEP, decode_target

    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        labels = [int(t) for t in text.split(LABEL_SEP) if t.strip()]
    except (TypeError, ValueError, UnicodeDecodeError):
        return None, -1, index, f"labels {raw!r:.30} are not class indices joined by '{LABEL_SEP}'"
    if any(not 0 <= t < n_classes for t in labels):
        return None, -1, index, f"labels {text[:30]!r} are not among the {n_classes} classes of index.json"
    images = [v for k, v in sample.items() if not k.startswith("_") and k not in META_KEYS]
    if len(images) != 1 or not isinstance(images[0], bytes):
        return None, -1, index, f"holds {len(images)} image members, not one"
    return images[0], decode_target(text, n_classes), index, ""


def first_samples(source: "ShardSource", split: str, n: int) -> List[Tuple[bytes, str]]:
    """Up to ``n`` usable (image bytes, class name) samples from the start of a split's shards (for the
    report's sample grid); unusable ones are passed over silently (training reports them)."""
    part = source.split(split, filtered=False)
    out: List[Tuple[bytes, str]] = []
    for url in (part or {}).get("urls", []):
        samples = _shard_samples(url, None)
        try:
            for sample in samples:
                data, target, _, problem = sample_fields(sample, len(source.classes),
                                                         multilabel=source.task == "multilabel")
                if not problem:
                    names = ([source.classes[i] for i in range(len(source.classes)) if target[i] > 0]
                             if source.task == "multilabel" else [source.classes[target]])
                    out.append((data, "; ".join(names)))
                if len(out) >= n:
                    return out
        finally:
            samples.close()
    return out


def report_bad_sample(where: str, reason: str, bad_log=None) -> None:
    """One line per unusable sample or shard, once (per run when ``bad_log`` is its bad_files.txt)."""
    from .dataset import report_failure

    report_failure(where, reason, bad_log, _REPORTED)


_REPORTED: set = set()


def _decode(sample: dict, min_size: Optional[int], n_classes: int, n_samples: Optional[int] = None,
            bad_log=None, multilabel: bool = False, channels: int = 3) -> Tuple[Any, Any, int]:
    """(image or None, target, index): a multi-hot target for multi-label shards; an unusable sample is
    listed once (bad_files.txt) and comes back with no image."""
    data, target, index, problem = sample_fields(sample, n_classes, n_samples, multilabel)
    if not problem:
        try:
            return load_image(io.BytesIO(data), min_size, channels=channels), target, index
        except ImageDecodeError as e:
            problem = f"cannot decode ({e})"
    source = sample.get("path.txt")  # the original file, when the sample says
    name = str(sample.get("__key__"))[:80] + (f" ({source.decode('utf-8', 'replace')[:200]})"
                                              if isinstance(source, bytes) else "")
    report_bad_sample(f"{sample.get('__url__')}#{name}", problem, bad_log)
    if multilabel and not torch.is_tensor(target):
        target = torch.zeros(n_classes)
    return None, target if torch.is_tensor(target) else max(target, 0), max(index, 0)


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
