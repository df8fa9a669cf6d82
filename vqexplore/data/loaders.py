"""Loaders whose batches are a pure function of (seed, epoch), and mid-epoch resume.

Set the epoch with ``dataset.set_epoch(epoch)`` or, better, through the loader: ``make_loader``
uses an ``EpochSampler`` that hands ``(epoch, index)`` keys to the dataset, so
``loader.sampler.set_epoch(e)`` reaches persistent workers too (a dataset attribute set in the
main process would not). The order is ``torch.randperm`` under a generator seeded from
``(seed, epoch)``.

To resume mid-epoch, the trainer saves the global step; on restart it calls
``iter_batches(loader, start_step=step)``, which sets epoch = step // batches_per_epoch and
starts the sampler ``step % batches_per_epoch`` batches in (``make_loader(..., start_batch=k)``
does the same for one epoch): skipped items are never decoded, and the batches that follow are
exactly those an uninterrupted run would have seen.
"""
from __future__ import annotations

import functools
import math
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..errors import DataError
from .sources import _resolve, make_dataset

__all__ = ["EpochSampler", "make_loader", "iter_batches", "validation_batch"]

def _order_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch) & 0xFFFFFFFFFFFFFFFF, 0x5EED])
    return int(state.generate_state(1, np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


class EpochSampler(DistributedSampler):
    """Order = pure function of (seed, epoch); yields ``(epoch, index)`` keys to datasets that
    accept them (so the epoch reaches persistent workers), plain indices otherwise.

    Distributed like ``DistributedSampler`` (padded to a multiple of ``num_replicas``, rank r
    takes every num_replicas-th index). ``start`` skips this rank's first items without yielding
    them (mid-epoch resume); ``set_epoch`` resets it unless given.
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                 num_replicas: int = 1, rank: int = 0, start: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.with_epoch = bool(getattr(dataset, "accepts_epoch_keys", False))
        self.set_epoch(epoch, start=start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        if not 0 <= int(start) <= self.num_samples:
            raise ValueError(f"start {start} is outside this rank's {self.num_samples} samples")
        self.start = int(start)
        if hasattr(self.dataset, "set_epoch"):
            # for plain-index access in this process; workers get the epoch from the keys (a dataset
            # without key support only sees it with num_workers=0 or non-persistent workers)
            self.dataset.set_epoch(self.epoch)

    def order(self) -> list[int]:
        """This rank's full index order for the current epoch (before ``start``)."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_order_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        pad = self.total_size - n
        if pad > 0 and n > 0:
            order += (order * math.ceil(pad / n))[:pad]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator:
        order = self.order()[self.start:]
        if self.with_epoch:
            return iter([(self.epoch, i) for i in order])
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples - self.start


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, distributed: bool = False, epoch: int = 0, start_batch: int = 0,
                num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
    """A DataLoader over ``dataset`` whose batches are a pure function of (seed, epoch).

    The sampler is an ``EpochSampler`` (a ``DistributedSampler``): call
    ``loader.sampler.set_epoch(e)`` before each later epoch (or use ``iter_batches``).
    distributed: split across ``torch.distributed`` ranks (``num_replicas``/``rank`` override).
    start_batch: skip the first k batches of ``epoch`` without decoding them (mid-epoch resume).
    pin_memory when CUDA is available; persistent workers when ``num_workers > 0`` (unless the
    dataset has ``set_epoch`` but does not accept ``(epoch, index)`` keys).
    """
    if distributed:
        import torch.distributed as dist

        if num_replicas is None or rank is None:
            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("distributed=True needs torch.distributed initialised (torchrun) "
                                   "or explicit num_replicas and rank")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
    else:
        num_replicas, rank = 1, 0
    sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed, epoch=epoch, num_replicas=num_replicas,
                           rank=rank, start=int(start_batch) * int(batch_size))
    generator = torch.Generator()
    generator.manual_seed(_order_seed(seed, -1))  # worker base seeds, for any third-party randomness
    # persistent workers keep their copy of the dataset: fine when the epoch travels in the keys,
    # wrong for a dataset that only learns it through set_epoch
    persistent = num_workers > 0 and (sampler.with_epoch or not hasattr(dataset, "set_epoch"))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available(),
                      persistent_workers=persistent, generator=generator)


def _batches_per_epoch(loader: DataLoader) -> int:
    n = loader.sampler.num_samples
    return n // loader.batch_size if loader.drop_last else math.ceil(n / loader.batch_size)


def iter_batches(loader: DataLoader, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Batches forever, starting at global step ``start_step`` (step-based training, resume).

    Step s is batch ``s % B`` of epoch ``s // B`` with B full batches per epoch; the loader must
    come from ``make_loader`` and its ``epoch`` argument is overridden. Skipped batches are not
    decoded."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError("iter_batches needs a loader made by make_loader")
    per_epoch = _batches_per_epoch(loader)
    if per_epoch == 0:
        raise DataError(f"the dataset has {len(loader.dataset)} items, fewer than one batch of {loader.batch_size}; "
                        f"use a smaller batch size or more data")
    epoch, k = divmod(int(start_step), per_epoch)
    while True:
        sampler.set_epoch(epoch, start=k * loader.batch_size)
        yield from loader
        epoch, k = epoch + 1, 0


@functools.lru_cache(maxsize=8)
def _validation_batch_cached(source: str, n: int, size: int) -> torch.Tensor:
    # decode only the n images needed (not a whole ImageNet val folder); batch files load as usual
    in_memory = None if _resolve(source)[0] == "imagenet64" else False
    ds = make_dataset(source, "val", size, in_memory=in_memory)
    if len(ds) == 0:
        raise DataError(f"{source} has no validation images; use a source with a val split")
    return torch.stack([ds[i] for i in range(min(n, len(ds)))])


def validation_batch(source: str = "builtin", n: int = 64, size: int = 64) -> torch.Tensor:
    """The first ``n`` items of the val split: float32 ``(n, 3, size, size)`` in [-1, 1].

    Fixed and deterministic (for dashboards and reconstruction grids); fewer than ``n`` when the
    split is smaller. Cached per (source, n, size); a fresh copy is returned."""
    return _validation_batch_cached(str(source), int(n), int(size)).clone()
