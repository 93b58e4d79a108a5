"""Building datasets and data loaders from a config."""
from __future__ import annotations

import logging
import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ..utils import comm
from .catalog import DatasetCatalog
from .samplers import InferenceSampler, TrainingSampler

__all__ = ["get_dataset_dicts", "MapDataset", "build_train_loader", "build_test_loader", "trivial_batch_collator"]

logger = logging.getLogger(__name__)


def get_dataset_dicts(names, filter_empty: bool = False) -> list[dict]:
    """Concatenate the records of the registered datasets ``names`` (a list/tuple of strings)."""
    if isinstance(names, str):
        raise TypeError(f"Dataset names must be a list or tuple, got the string '{names}'. "
                        f"In YAML write TRAIN: (\"{names}\",); on the command line DATASETS.TRAIN \"('{names}',)\"")
    if not names:
        raise ValueError("No dataset given: set DATASETS.TRAIN / DATASETS.TEST to registered dataset names")
    records = [r for name in names for r in DatasetCatalog.get(name)]
    if filter_empty:
        before = len(records)
        records = [r for r in records if "annotations" not in r or any(not a.get("iscrowd", 0) for a in r["annotations"])]
        if before != len(records):
            logger.info(f"Removed {before - len(records)} images without usable annotations ({len(records)} left)")
    return records


class MapDataset(Dataset):
    """Applies ``mapper`` to records. A key is an index, or ``(index, seed)`` from TrainingSampler: the
    mapper then runs under torch/numpy/random RNGs seeded with ``seed`` (restored afterwards)."""

    def __init__(self, records: list[dict], mapper: Callable[[dict], dict]):
        self.records, self.mapper = records, mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, seed = key
            np_state, py_state = np.random.get_state(), random.getstate()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
                try:
                    return self.mapper(self.records[index])
                finally:
                    np.random.set_state(np_state)
                    random.setstate(py_state)
        return self.mapper(self.records[key])


def trivial_batch_collator(batch: list[dict]) -> list[dict]:
    """Batches stay lists of dicts; the model pads them (ImageList)."""
    return batch


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def build_train_loader(cfg, mapper: Callable[[dict], dict], seed: int, start_iter: int = 0,
                       records: list[dict] | None = None) -> DataLoader:
    """Infinite training loader over DATASETS.TRAIN yielding lists of SOLVER.IMS_PER_BATCH / world_size
    mapped records; starts where iteration ``start_iter`` of a run with ``seed`` would."""
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world != 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world})")
    if records is None:
        records = get_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    sampler = TrainingSampler(len(records), shuffle=True, seed=seed, start=start_iter * total)
    batch_sampler = BatchSampler(sampler, total // world, drop_last=True)
    return DataLoader(MapDataset(records, mapper), batch_sampler=batch_sampler, collate_fn=trivial_batch_collator,
                      num_workers=cfg.DATALOADER.NUM_WORKERS, worker_init_fn=_worker_init,
                      persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)


def build_test_loader(cfg, dataset_name: str, mapper: Callable[[dict], dict]) -> DataLoader:
    """Loader over one test dataset, batch 1 per process, each image on exactly one process."""
    records = get_dataset_dicts([dataset_name])
    return DataLoader(MapDataset(records, mapper), batch_size=1, sampler=InferenceSampler(len(records)),
                      collate_fn=trivial_batch_collator, num_workers=cfg.DATALOADER.NUM_WORKERS,
                      worker_init_fn=_worker_init)
