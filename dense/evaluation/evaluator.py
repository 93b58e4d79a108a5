"""The evaluator protocol and the inference loop."""
from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict
from contextlib import contextmanager

import torch
from fvcore.common.registry import Registry
from torch import nn

from ..utils import comm
from ..utils.logger import ProgressLog

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset",
           "inference_context"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Evaluators by the ``evaluator_type`` of a dataset's metadata ("sem_seg", "coco", ...): a function
``(cfg, dataset_name) -> DatasetEvaluator``.
"""


def build_evaluator(cfg, dataset_name: str) -> DatasetEvaluator:
    """The evaluator for ``dataset_name``, chosen by its metadata's ``evaluator_type``."""
    from ..data.catalog import MetadataCatalog

    kind = MetadataCatalog.get(dataset_name).get("evaluator_type", "sem_seg")
    if kind not in EVALUATOR_REGISTRY:
        known = ", ".join(sorted(k for k, _ in EVALUATOR_REGISTRY))
        raise NotImplementedError(f"No evaluator for evaluator_type '{kind}' of dataset '{dataset_name}' "
                                  f"(registered: {known})")
    return EVALUATOR_REGISTRY.get(kind)(cfg, dataset_name)

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Accumulates (inputs, outputs) pairs with ``process`` and computes metrics with ``evaluate``.

    ``evaluate`` returns ``{task: {metric: value}}`` (e.g. ``{"sem_seg": {"mIoU": 47.1}}``) on the main
    process (gathering what every process saw) and None elsewhere.
    """

    def reset(self) -> None:
        pass

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict | None:
        raise NotImplementedError


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators over the same predictions and merges their results."""

    def __init__(self, evaluators: list[DatasetEvaluator]):
        self._evaluators = evaluators

    def reset(self) -> None:
        for e in self._evaluators:
            e.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for e in self._evaluators:
            e.process(inputs, outputs)

    def evaluate(self) -> dict | None:
        results: dict = OrderedDict()
        for e in self._evaluators:
            r = e.evaluate()
            if comm.is_main_process() and r is not None:
                for k in r:
                    assert k not in results, f"Two evaluators produced the metric group '{k}'"
                results.update(r)
        return results


@contextmanager
def inference_context(model: nn.Module):
    """Put ``model`` in eval mode for the block, restoring its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def inference_on_dataset(model: nn.Module, data_loader, evaluator: DatasetEvaluator | None) -> dict | None:
    """Run ``model`` over ``data_loader`` (each process its own shard), feed ``evaluator`` and return
    its results (main process). Logs throughput."""
    evaluator = evaluator or DatasetEvaluators([])
    evaluator.reset()
    total = len(data_loader)
    start = time.perf_counter()
    progress = ProgressLog(total, logger)
    with inference_context(model), torch.no_grad():
        for inputs in data_loader:
            outputs = model(inputs)
            evaluator.process(inputs, outputs)
            progress.step()
    logger.info(f"Total inference time: {datetime.timedelta(seconds=int(time.perf_counter() - start))} "
                f"({total} images on this process, {comm.get_world_size()} processes)")
    results = evaluator.evaluate()
    return results if results is not None else {}
