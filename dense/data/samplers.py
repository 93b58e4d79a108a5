"""Samplers for training (infinite, resumable, shared across processes) and inference (exact shards)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ..utils import comm

__all__ = ["TrainingSampler", "GroupedBatchSampler", "InferenceSampler", "sample_seed"]


def sample_seed(seed: int, position: int) -> int:
    """Seed of the augmentation randomness of the sample at ``position`` of the global training stream."""
    return (seed * 1_000_003 + position * 7_919) % (2**31)


class TrainingSampler(Sampler):
    """An endless stream of dataset positions, reshuffled every epoch with ``seed + epoch``.

    The stream is global: position k of it goes to process ``k % world_size``, so every process sees
    a disjoint part and the union is the same for any number of processes. Each item is
    ``(dataset_index, sample_seed)``: the dataset seeds the sample's augmentations with it, which makes
    a run resumed at iteration i (``start = i * total_batch``) see exactly the samples, augmented
    exactly as, an uninterrupted run would.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, start: int = 0):
        if size <= 0:
            raise ValueError("TrainingSampler needs a non-empty dataset")
        self._size, self._shuffle, self._seed, self._start = size, shuffle, int(seed), int(start)
        self._rank, self._world = comm.get_rank(), comm.get_world_size()

    def _global_stream(self, start: int) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(start, self._size)
        position = start
        while True:
            if self._shuffle:
                g = torch.Generator().manual_seed(self._seed + epoch)
                order = torch.randperm(self._size, generator=g).tolist()
            else:
                order = list(range(self._size))
            for idx in order[offset:]:
                yield idx, sample_seed(self._seed, position)
                position += 1
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        yield from itertools.islice(self._global_stream(self._start + self._rank), 0, None, self._world)


class GroupedBatchSampler(Sampler):
    """Batches of images of one aspect group (mmdet GroupSampler, Detectron2 AspectRatioGroupedDataset), exact on
    resume.

    The global stream of :class:`TrainingSampler` is dealt into one bucket per group (``group_ids[index]``, e.g.
    1 = landscape, 0 = portrait); each bucket that reaches ``total_batch`` items becomes the next global batch, of
    which process r takes items r, r + world_size, ... . The batches are a function of ``seed`` alone: a run
    started at iteration ``start_iter`` replays the stream's indices (no image is read) and skips that many
    batches, so it sees exactly the batches, and augmentation seeds, an uninterrupted run sees from there.
    """

    def __init__(self, group_ids: list[int], total_batch: int, seed: int = 0, start_iter: int = 0):
        world = comm.get_world_size()
        if total_batch % world:
            raise ValueError(f"The batch ({total_batch}) must be divisible by the number of processes ({world})")
        self._groups, self._total, self._seed, self._start = list(group_ids), total_batch, int(seed), int(start_iter)
        self._rank, self._world = comm.get_rank(), world

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        buckets: dict[int, list[tuple[int, int]]] = {}
        batches = 0
        for item in TrainingSampler(len(self._groups), seed=self._seed)._global_stream(0):
            group = self._groups[item[0]]
            bucket = buckets.setdefault(group, [])
            bucket.append(item)
            if len(bucket) == self._total:
                if batches >= self._start:
                    yield bucket[self._rank::self._world]
                batches += 1
                buckets[group] = []


class InferenceSampler(Sampler):
    """Splits ``range(size)`` into contiguous shards, one per process, each index exactly once
    (no padding, so gathered results cover the dataset exactly)."""

    def __init__(self, size: int):
        world, rank = comm.get_world_size(), comm.get_rank()
        shard, left = divmod(size, world)
        sizes = [shard + int(r < left) for r in range(world)]
        begin = sum(sizes[:rank])
        self._local = range(begin, begin + sizes[rank])

    def __iter__(self) -> Iterator[int]:
        yield from self._local

    def __len__(self) -> int:
        return len(self._local)
