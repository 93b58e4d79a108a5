"""Building datasets and data loaders from a config."""
from __future__ import annotations

import logging
import os
import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ..utils import comm
from .catalog import DatasetCatalog
from .annotations import check_instance_annotations
from .io import BadSampleError
from .samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler

__all__ = ["get_dataset_dicts", "train_records", "MapDataset", "build_train_loader", "build_test_loader",
           "trivial_batch_collator"]

logger = logging.getLogger(__name__)


def get_dataset_dicts(names, filter_empty: bool = False, on_bad_sample: str = "error",
                      check_annotations: bool = False) -> list[dict]:
    """Concatenate the records of the registered datasets ``names`` (a list/tuple of strings).

    Records whose label file does not exist are an error naming them (``on_bad_sample="error"``) or are
    dropped and counted (``"skip"``). ``check_annotations`` validates instance annotations the same way (malformed
    polygons, degenerate boxes: see :func:`check_instance_annotations`). ``filter_empty`` then drops images
    without usable instance annotations.
    """
    if isinstance(names, str):
        raise TypeError(f"Dataset names must be a list or tuple, got the string '{names}'. "
                        f"In YAML write TRAIN: (\"{names}\",); on the command line DATASETS.TRAIN \"('{names}',)\"")
    if not names:
        raise ValueError("No dataset given: set DATASETS.TRAIN / DATASETS.TEST to registered dataset names")
    records = [r for name in names for r in DatasetCatalog.get(name)]
    missing = [r["sem_seg_file_name"] for r in records
               if "sem_seg_file_name" in r and not os.path.isfile(r["sem_seg_file_name"])]
    if missing:
        if on_bad_sample != "skip":
            shown = "\n  ".join(missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} images of {list(names)} have no label file, e.g.:\n  {shown}\nRestore the labels, or "
                f"set DATALOADER.ON_BAD_SAMPLE skip to use the labelled images only")
        missing_set = set(missing)
        records = [r for r in records if r.get("sem_seg_file_name") not in missing_set]
        logger.warning(f"Skipped {len(missing)} images of {list(names)} without a label file ({len(records)} left)")
    if check_annotations:
        records = check_instance_annotations(records, on_bad_sample)
    if filter_empty:
        before = len(records)
        records = [r for r in records
                   if "annotations" not in r or any(not a.get("iscrowd", 0) for a in r["annotations"])]
        if before != len(records):
            logger.info(f"Removed {before - len(records)} images without usable annotations ({len(records)} left)")
    return records


class MapDataset(Dataset):
    """Applies ``mapper`` to records. A key is an index, or ``(index, seed)`` from TrainingSampler: the
    mapper then runs under torch/numpy/random RNGs seeded with ``seed`` (restored afterwards).

    ``on_bad_sample="skip"``: a record the mapper rejects (BadSampleError: corrupt image, label values out of
    range, ...) is logged, counted and replaced by the next record, deterministically; "error" re-raises.
    """

    def __init__(self, records: list[dict], mapper: Callable[[dict], dict], on_bad_sample: str = "error"):
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"DATALOADER.ON_BAD_SAMPLE must be 'error' or 'skip', got '{on_bad_sample}'")
        self.records, self.mapper, self.on_bad_sample = records, mapper, on_bad_sample
        self.skipped = 0

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
                    return self._map(index)
                finally:
                    np.random.set_state(np_state)
                    random.setstate(py_state)
        return self._map(key)

    def _map(self, index: int) -> dict:
        for attempt in range(len(self.records)):
            try:
                return self.mapper(self.records[(index + attempt) % len(self.records)])
            except BadSampleError as e:
                if self.on_bad_sample == "error":
                    raise
                self.skipped += 1
                logger.warning(f"Skipping a bad sample ({self.skipped} so far in this process): {e}")
        raise BadSampleError("Every sample of the dataset was rejected by the mapper")


def trivial_batch_collator(batch: list[dict]) -> list[dict]:
    """Batches stay lists of dicts; the model pads them (ImageList)."""
    return batch


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def train_records(cfg) -> list[dict]:
    """The records of DATASETS.TRAIN as training uses them (bad samples, annotation checks, empty images per
    DATALOADER)."""
    return get_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                             on_bad_sample=cfg.DATALOADER.ON_BAD_SAMPLE, check_annotations=True)


def build_train_loader(cfg, mapper: Callable[[dict], dict], seed: int, start_iter: int = 0,
                       records: list[dict] | None = None) -> DataLoader:
    """Infinite training loader over DATASETS.TRAIN yielding lists of SOLVER.IMS_PER_BATCH / world_size
    mapped records; starts where iteration ``start_iter`` of a run with ``seed`` would."""
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total % world != 0:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes ({world})")
    policy = cfg.DATALOADER.ON_BAD_SAMPLE
    if records is None:
        records = train_records(cfg)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        if any("height" not in r or "width" not in r for r in records):
            raise ValueError("DATALOADER.ASPECT_RATIO_GROUPING needs 'height' and 'width' in every record (COCO-style "
                             "datasets have them); set it False for this dataset")
        batch_sampler = GroupedBatchSampler([int(r["width"] > r["height"]) for r in records], total, seed, start_iter)
    else:
        sampler = TrainingSampler(len(records), shuffle=True, seed=seed, start=start_iter * total)
        batch_sampler = BatchSampler(sampler, total // world, drop_last=True)
    return DataLoader(MapDataset(records, mapper, policy), batch_sampler=batch_sampler,
                      collate_fn=trivial_batch_collator, num_workers=cfg.DATALOADER.NUM_WORKERS,
                      worker_init_fn=_worker_init, persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)


def build_test_loader(cfg, dataset_name: str, mapper: Callable[[dict], dict]) -> DataLoader:
    """Loader over one test dataset, TEST.IMS_PER_BATCH images per step and process, each image on exactly one
    process. Evaluation never skips bad samples: a metric over a silently smaller dataset would mislead."""
    records = get_dataset_dicts([dataset_name])
    return DataLoader(MapDataset(records, mapper), batch_size=cfg.TEST.IMS_PER_BATCH,
                      sampler=InferenceSampler(len(records)),
                      collate_fn=trivial_batch_collator, num_workers=cfg.DATALOADER.NUM_WORKERS,
                      worker_init_fn=_worker_init)
