"""Image classification accuracy: top-1 and top-5 over every image of the dataset, gathered across processes."""
from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np

from ..utils import comm
from ..utils.registry import register_as
from .evaluator import EVALUATOR_REGISTRY, DatasetEvaluator

__all__ = ["ClassificationEvaluator"]

logger = logging.getLogger(__name__)


@register_as(EVALUATOR_REGISTRY, "classification")
class ClassificationEvaluator(DatasetEvaluator):
    """Top-k accuracy (in %) of ``{"logits": [K]}`` predictions against the inputs' ``label``.

    ``evaluate()`` -> ``{"classification": {"top1": ..., "top5": ...}}`` (metrics.json: ``classification/top1``), on
    the main process; every image counts once, whichever process saw it (the test sampler splits the dataset)."""

    def __init__(self, cfg=None, dataset_name: str = "", topk: tuple[int, ...] = (1, 5)):
        self.dataset_name, self.topk = dataset_name, tuple(topk)
        self.reset()

    def reset(self) -> None:
        self._ranks: list[tuple[str, int]] = []  # (image, rank of the true class among the logits)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for x, out in zip(inputs, outputs):
            logits = out["logits"].float()
            rank = int((logits > logits[x["label"]]).sum())  # 0 = the true class scores highest
            self._ranks.append((x.get("file_name", str(len(self._ranks))), rank))

    def evaluate(self) -> dict | None:
        gathered = comm.gather(self._ranks)
        if not comm.is_main_process():
            return None
        ranks = dict(r for part in gathered for r in part)  # one entry per image
        if not ranks:
            logger.warning(f"No predictions to evaluate on '{self.dataset_name}'")
            return {"classification": OrderedDict((f"top{k}", float("nan")) for k in self.topk)}
        values = np.array(list(ranks.values()))
        res = OrderedDict((f"top{k}", 100.0 * float((values < k).mean())) for k in self.topk)
        logger.info(f"Classification on '{self.dataset_name}' ({len(values)} images): "
                    + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
        return {"classification": res}

