"""Semantic segmentation metrics from a confusion matrix (mmseg's definitions)."""
from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
from tabulate import tabulate

from ..data.catalog import MetadataCatalog
from ..data.io import read_sem_seg
from ..utils import comm
from ..utils.registry import register_as
from .evaluator import EVALUATOR_REGISTRY, DatasetEvaluator

__all__ = ["SemSegEvaluator", "metrics_from_confusion"]

logger = logging.getLogger(__name__)


def metrics_from_confusion(conf: np.ndarray, class_names: list[str]) -> OrderedDict:
    """Metrics (in %) from ``conf`` [K, K], rows = ground truth, columns = prediction (ignored pixels excluded).

    IoU_c = TP / (GT_c + Pred_c - TP), defined when the union is non-empty (a class absent from the
    ground truth but predicted counts with IoU 0, as in mmseg); ACC_c = TP / GT_c, defined when GT_c > 0.
    mIoU / mACC average the defined values; fwIoU weights IoU by GT frequency; pACC = sum TP / sum GT.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt = conf.sum(1)
    pred = conf.sum(0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    res = OrderedDict()
    res["mIoU"] = 100 * float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    freq = gt / max(gt.sum(), 1)
    valid = np.isfinite(iou)
    res["fwIoU"] = 100 * float((iou[valid] * freq[valid]).sum())
    res["mACC"] = 100 * float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")
    res["pACC"] = 100 * float(tp.sum() / max(gt.sum(), 1))
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    return res


class SemSegEvaluator(DatasetEvaluator):
    """Accumulates a confusion matrix of argmax predictions against the dataset's label files (read at the
    original resolution, with the record's reduce_zero_label) over all processes."""

    def __init__(self, dataset_name: str, num_classes: int | None = None, ignore_label: int | None = None):
        meta = MetadataCatalog.get(dataset_name)
        self.dataset_name = dataset_name
        self.class_names = list(meta.get("stuff_classes", []))
        self.num_classes = num_classes or len(self.class_names)
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"Dataset '{dataset_name}' has {len(self.class_names)} classes but the model predicts "
                             f"{self.num_classes}: set MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(self.class_names)}")
        self.ignore_label = meta.get("ignore_label", 255) if ignore_label is None else ignore_label
        self.reset()

    def reset(self) -> None:
        self._conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(0).cpu().numpy()
            gt = read_sem_seg(inp["sem_seg_file_name"], inp.get("reduce_zero_label", False), self.ignore_label)
            if gt.shape != pred.shape:
                raise ValueError(f"Prediction {pred.shape} and label {gt.shape} of '{inp['sem_seg_file_name']}' differ "
                                 f"in size: the model must return sem_seg at the input's height x width")
            self.add(pred, gt)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Accumulate one prediction/label pair of equal shape."""
        valid = gt != self.ignore_label
        if np.any(gt[valid] >= self.num_classes):
            raise ValueError(f"Label values {np.unique(gt[valid][gt[valid] >= self.num_classes])[:10].tolist()} exceed "
                             f"the {self.num_classes} classes of '{self.dataset_name}'")
        idx = gt[valid].astype(np.int64) * self.num_classes + pred[valid].astype(np.int64)
        self._conf += np.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def evaluate(self) -> dict | None:
        confs = comm.gather(self._conf)
        if not comm.is_main_process():
            return None
        conf = np.sum(confs, axis=0)
        res = metrics_from_confusion(conf, self.class_names)
        table = [[n, f"{res[f'IoU-{n}']:.2f}", f"{res[f'ACC-{n}']:.2f}"] for n in self.class_names]
        logger.info(f"Semantic segmentation on {self.dataset_name}:\n"
                    + tabulate(table, headers=["class", "IoU", "Acc"], tablefmt="pipe") + "\n"
                    + "  ".join(f"{k}: {res[k]:.2f}" for k in ("mIoU", "fwIoU", "mACC", "pACC")))
        return {"sem_seg": res}


@register_as(EVALUATOR_REGISTRY, "sem_seg")
def _sem_seg_evaluator(cfg, dataset_name: str) -> SemSegEvaluator:
    return SemSegEvaluator(dataset_name, num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                           ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
