"""Panoptic quality (PQ, SQ, RQ for all, thing and stuff classes) with panopticapi's definition
(cocodataset/panopticapi ``pq_compute``), computed in memory from the predictions and the dataset's
COCO-panoptic PNGs."""
from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict

import numpy as np
from tabulate import tabulate

from ..data.catalog import DatasetCatalog, MetadataCatalog
from ..data.io import read_image
from ..data.mask_former_mappers import rgb2id
from ..utils import comm
from ..utils.registry import register_as
from .evaluator import EVALUATOR_REGISTRY, DatasetEvaluator, DatasetEvaluators

__all__ = ["COCOPanopticEvaluator", "pq_stats", "pq_average"]

logger = logging.getLogger(__name__)

OFFSET = 256 * 256 * 256  # panopticapi: segment ids are below 256^3
VOID = 0


def pq_stats(gt_ids: np.ndarray, gt_segments: list[dict], pred_ids: np.ndarray, pred_segments: list[dict]) -> dict:
    """Per-category [iou sum, tp, fp, fn] of one image (panopticapi ``pq_compute_single_core``).

    gt_ids / pred_ids: segment ids [H, W] (0 = void); gt_segments: ``id``, ``category_id``, ``iscrowd`` and
    ``area`` (taken from the annotation, as panopticapi; counted from the map when absent); pred_segments:
    ``id``, ``category_id``. A pair matches when its categories agree and IoU > 0.5, where the union leaves out
    the prediction's void pixels; unmatched non-crowd ground truth is a false negative; an unmatched prediction
    is a false positive unless more than half of it lies on void or on a crowd region of its category.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"Panoptic prediction {pred_ids.shape} and ground truth {gt_ids.shape} differ in size: the "
                         f"model must return panoptic_seg at the input's height x width")
    stats: dict = defaultdict(lambda: [0.0, 0, 0, 0])
    gt_segms = {s["id"]: s for s in gt_segments}
    pred_segms = {s["id"]: dict(s) for s in pred_segments}
    labels, counts = np.unique(pred_ids, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label == VOID:
            continue
        if label not in pred_segms:
            raise KeyError(f"Segment id {label} is in the predicted map but not in its segments_info")
        pred_segms[label]["area"] = count
    missing = [i for i, s in pred_segms.items() if "area" not in s]
    if missing:
        raise KeyError(f"Predicted segments {missing} are in segments_info but not in the predicted map")
    gt_area = dict(zip(*np.unique(gt_ids, return_counts=True)))
    joint, inter = np.unique(gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64), return_counts=True)
    pairs = {(int(j // OFFSET), int(j % OFFSET)): int(n) for j, n in zip(joint, inter)}
    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in pairs.items():
        if gt_label not in gt_segms or pred_label not in pred_segms:
            continue
        gt, pred = gt_segms[gt_label], pred_segms[pred_label]
        if gt.get("iscrowd", 0) == 1 or gt["category_id"] != pred["category_id"]:
            continue
        area = gt.get("area", int(gt_area.get(gt_label, 0)))
        union = pred["area"] + area - intersection - pairs.get((VOID, pred_label), 0)
        iou = intersection / union
        if iou > 0.5:
            stat = stats[gt["category_id"]]
            stat[0] += iou
            stat[1] += 1
            gt_matched.add(gt_label)
            pred_matched.add(pred_label)
    crowd = {}
    for gt_label, gt in gt_segms.items():
        if gt_label in gt_matched:
            continue
        if gt.get("iscrowd", 0) == 1:
            crowd[gt["category_id"]] = gt_label
            continue
        stats[gt["category_id"]][3] += 1
    for pred_label, pred in pred_segms.items():
        if pred_label in pred_matched:
            continue
        ignored = pairs.get((VOID, pred_label), 0)
        if pred["category_id"] in crowd:
            ignored += pairs.get((crowd[pred["category_id"]], pred_label), 0)
        if ignored / pred["area"] > 0.5:
            continue
        stats[pred["category_id"]][2] += 1
    return dict(stats)


def pq_average(stats: dict, isthing: dict[int, bool], things: bool | None) -> tuple[dict, dict]:
    """(PQ, SQ, RQ averaged over the categories of ``isthing`` (only things / only stuff / all for ``things``
    True / False / None) that occur (tp + fp + fn > 0), per-category values); fractions, not %."""
    total = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    per_class, n = {}, 0
    for cat, cat_isthing in isthing.items():
        if things is not None and things != cat_isthing:
            continue
        iou, tp, fp, fn = stats.get(cat, [0.0, 0, 0, 0])
        if tp + fp + fn == 0:
            per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        values = {"pq": iou / (tp + 0.5 * fp + 0.5 * fn), "sq": iou / tp if tp else 0.0,
                  "rq": tp / (tp + 0.5 * fp + 0.5 * fn)}
        per_class[cat] = values
        for k in total:
            total[k] += values[k]
    return ({k: v / n for k, v in total.items()} if n else {k: float("nan") for k in total}) | {"n": n}, per_class


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ of ``panoptic_seg`` predictions (segment-id map at the input's height x width, segments_info with
    contiguous ``category_id``) against each input's ``pan_seg_file_name`` / ``segments_info``.

    Results (in %): PQ, SQ, RQ over all classes, PQ_th / SQ_th / RQ_th over things, PQ_st / SQ_st / RQ_st over
    stuff, and ``PQ-<class>``.
    """

    def __init__(self, dataset_name: str):
        meta = MetadataCatalog.get(dataset_name)
        self.dataset_name = dataset_name
        self.class_names = list(meta.stuff_classes)
        things = set(meta.thing_dataset_id_to_contiguous_id.values())
        self.isthing = {c: c in things for c in range(len(self.class_names))}
        self.reset()

    def reset(self) -> None:
        self._stats: dict = defaultdict(lambda: [0.0, 0, 0, 0])

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            seg, segments = out["panoptic_seg"]
            unknown = [s["category_id"] for s in segments if s["category_id"] not in self.isthing]
            if unknown:
                raise KeyError(f"Predicted categories {unknown} are not classes of '{self.dataset_name}'")
            gt_ids = rgb2id(read_image(inp["pan_seg_file_name"], "RGB"))
            for cat, s in pq_stats(gt_ids, inp["segments_info"], seg.cpu().numpy(), segments).items():
                acc = self._stats[cat]
                for i in range(4):
                    acc[i] += s[i]

    def evaluate(self) -> dict | None:
        gathered = comm.gather(dict(self._stats))
        if not comm.is_main_process():
            return None
        stats: dict = defaultdict(lambda: [0.0, 0, 0, 0])
        for part in gathered:
            for cat, s in part.items():
                for i in range(4):
                    stats[cat][i] += s[i]
        res = OrderedDict()
        rows = []
        for name, things in (("", None), ("_th", True), ("_st", False)):
            avg, per_class = pq_average(stats, self.isthing, things)
            res.update({f"PQ{name}": 100 * avg["pq"], f"SQ{name}": 100 * avg["sq"], f"RQ{name}": 100 * avg["rq"]})
            rows.append([{"": "All", "_th": "Things", "_st": "Stuff"}[name], 100 * avg["pq"], 100 * avg["sq"],
                         100 * avg["rq"], avg["n"]])
        _, per_class = pq_average(stats, self.isthing, None)
        for cat, name in enumerate(self.class_names):
            res[f"PQ-{name}"] = 100 * per_class[cat]["pq"]
        logger.info(f"Panoptic segmentation on {self.dataset_name}:\n"
                    + tabulate(rows, headers=["", "PQ", "SQ", "RQ", "#categories"], tablefmt="pipe", floatfmt=".2f"))
        return {"panoptic_seg": res}


@register_as(EVALUATOR_REGISTRY, "coco_panoptic_seg")
def _panoptic_evaluators(cfg, dataset_name: str) -> DatasetEvaluator:
    """PQ, plus the semantic (mIoU, when the model returns sem_seg and the dataset has semantic labels) and instance
    (mask AP, when it returns instances and the dataset has an instances json) views of the same predictions,
    as Mask2Former evaluates its panoptic models."""
    from .coco import COCOEvaluator
    from .sem_seg import SemSegEvaluator

    records = DatasetCatalog.get(dataset_name)  # loading records the dataset's instances json, if any
    evaluators: list[DatasetEvaluator] = [COCOPanopticEvaluator(dataset_name)]
    test = cfg.MODEL.MASK_FORMER.TEST
    if test.SEMANTIC_ON and records and "sem_seg_file_name" in records[0]:
        evaluators.append(SemSegEvaluator(dataset_name, num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                                          ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
    if test.INSTANCE_ON and MetadataCatalog.get(dataset_name).get("json_file"):
        evaluators.append(COCOEvaluator(dataset_name, tasks=("segm",)))
    return DatasetEvaluators(evaluators)
