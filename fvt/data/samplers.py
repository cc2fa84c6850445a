"""Training samplers that yield ``(dataset_index, sample_seed)`` and the sharded eval sampler.

Every training sampler builds the same global order on every rank from ``(seed, epoch)``,
then takes its share ``order[rank::world_size]`` (the order is padded by wrapping to a
multiple of ``world_size``, as ``DistributedSampler`` does). Each position also gets its own
``sample_seed``, so augmentation is a pure function of (seed, epoch, position).

* ``set_epoch(e)`` selects the epoch (and resets the start to 0);
* ``set_start(n)`` skips the first ``n`` samples of this rank's epoch without decoding them
  (call it after ``set_epoch``: exact mid-epoch resume);
* ``state_dict()`` / ``load_state_dict()`` hold (epoch, start) as plain ints.

``TrainBatchSampler`` batches them and drops the last batch only when it holds a single
sample (BatchNorm cannot train on one). ``ShardSampler`` gives each rank a disjoint share of
the eval set, every index exactly once (no padding duplicates).
"""

from __future__ import annotations

import math
from typing import Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import Sampler

_SEED_MAX = 2 ** 31 - 1


class EpochPosition:
    """Where a training stream stands: the epoch, and the samples this rank already took in it (resume)."""

    epoch: int = 0
    start: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = int(epoch), 0

    def set_start(self, n: int) -> None:
        self.start = max(0, int(n))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state.get("epoch", 0))
        self.set_start(state.get("start", 0))


class TrainSampler(EpochPosition, Sampler):
    """Base: shuffled permutation of the dataset (``random``)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.n, self.rank, self.world_size = num_samples, rank, world_size
        self.seed, self.shuffle = int(seed), shuffle
        self.epoch, self.start = 0, 0

    # -- what subclasses change --------------------------------------------------------
    def epoch_length(self) -> int:
        """Samples per rank per epoch."""
        return math.ceil(self.n / self.world_size)

    def global_order(self, g: torch.Generator) -> List[int]:
        return (torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)).tolist()

    # -- shared ----------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + 17) % (2 ** 63))

    def rank_items(self) -> List[Tuple[int, int]]:
        """This rank's whole epoch as (index, sample_seed) pairs, ignoring ``start``."""
        g = self._generator()
        order = self.global_order(g)
        total = self.epoch_length() * self.world_size
        if len(order) < total:  # wrap around so that every rank gets the same count
            order = (order * math.ceil(total / len(order)))[:total]
        order = order[:total]
        seeds = torch.randint(0, _SEED_MAX, (total,), generator=g).tolist()
        return list(zip(order[self.rank::self.world_size], seeds[self.rank::self.world_size]))

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return iter(self.rank_items()[self.start:])

    def __len__(self) -> int:
        return max(0, self.epoch_length() - self.start)



class RandomSampler(TrainSampler):
    pass


class BalancedSampler(TrainSampler):
    """Draws with replacement, each sample weighted by 1 / (its class's frequency)."""

    def __init__(self, targets: Sequence[int], rank: int = 0, world_size: int = 1, seed: int = 0):
        super().__init__(len(targets), rank, world_size, seed)
        t = torch.as_tensor(list(targets), dtype=torch.long)
        counts = torch.bincount(t).double()
        self.weights = (1.0 / counts)[t]

    def global_order(self, g: torch.Generator) -> List[int]:
        total = self.epoch_length() * self.world_size
        return torch.multinomial(self.weights, total, replacement=True, generator=g).tolist()


class RASampler(TrainSampler):
    """Repeated augmentation (DeiT): each image ``repeats`` times per epoch, its copies spread
    over consecutive positions (so over ranks, or within a batch on one process). The epoch
    keeps the plain length, so an epoch sees about n / repeats distinct images."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0, repeats: int = 3):
        super().__init__(num_samples, rank, world_size, seed)
        self.repeats = max(1, int(repeats))

    def global_order(self, g: torch.Generator) -> List[int]:
        perm = torch.randperm(self.n, generator=g)
        return perm.repeat_interleave(self.repeats).tolist()


class TrainBatchSampler(Sampler):
    """Batches of a ``TrainSampler``; only a trailing batch of size 1 is dropped.

    Batch boundaries are fixed relative to the start of the epoch (positions 0..bs-1, bs..),
    so after ``set_start(n)`` the remaining batches are exactly those of an uninterrupted
    epoch, even when ``n`` is not a multiple of the batch size."""

    def __init__(self, sampler: TrainSampler, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch size must be >= 1")
        self.sampler, self.batch_size = sampler, int(batch_size)
        self.size = None  # progressive resizing: the epoch's image size, sent with every item

    def _positions(self) -> range:
        start = getattr(self.sampler, "start", 0)
        total = start + len(self.sampler)
        if self.batch_size > 1 and total % self.batch_size == 1:
            total -= 1  # a last batch of one sample: BatchNorm cannot train on it
        return range(start, max(start, total))

    def __iter__(self):
        pos = self._positions()
        batch = []
        for p, item in zip(pos, self.sampler):
            batch.append(item if self.size is None else (*item, self.size))
            if (p + 1) % self.batch_size == 0 or p == pos[-1]:
                yield batch
                batch = []

    def __len__(self) -> int:
        pos = self._positions()
        return 0 if not pos else pos[-1] // self.batch_size - pos[0] // self.batch_size + 1


class ShardSampler(Sampler):
    """Evaluation: rank r gets indices r, r + W, r + 2W, ... -- each index on exactly one rank."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.n, self.rank, self.world_size = num_samples, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def make_train_sampler(kind: str, targets: Sequence[int], rank: int = 0, world_size: int = 1, seed: int = 0,
                       repeats: int = 3) -> TrainSampler:
    if kind == "random":
        return RandomSampler(len(targets), rank, world_size, seed)
    if kind == "balanced":
        return BalancedSampler(targets, rank, world_size, seed)
    if kind == "repeated":
        return RASampler(len(targets), rank, world_size, seed, repeats)
    raise ValueError(f"unknown sampler {kind!r}; expected random, balanced or repeated")
