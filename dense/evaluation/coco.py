"""COCO box / mask AP with pycocotools' COCOeval."""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
from collections import OrderedDict

import numpy as np
from tabulate import tabulate

from ..data.catalog import DatasetCatalog, MetadataCatalog
from ..utils import comm
from ..utils.registry import register_as
from .evaluator import EVALUATOR_REGISTRY, DatasetEvaluator

__all__ = ["COCOEvaluator", "instances_to_coco_json"]

logger = logging.getLogger(__name__)

_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def instances_to_coco_json(instances, image_id: int) -> list[dict]:
    """Predictions of one image (Instances with pred_boxes XYXY, scores, pred_classes, optional pred_masks)
    -> COCO result dicts (contiguous category ids; boxes XYWH; masks as RLE)."""
    n = len(instances)
    if n == 0:
        return []
    boxes = instances.pred_boxes.detach().cpu().numpy().astype(np.float64)
    boxes[:, 2:] -= boxes[:, :2]
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    rles = None
    if instances.has("pred_masks"):
        from pycocotools import mask as mask_util

        masks = instances.pred_masks.detach().cpu().numpy()
        rles = [mask_util.encode(np.asfortranarray(m[:, :, None] > 0.5 if m.dtype != bool else m[:, :, None],
                                                   dtype=np.uint8))[0] for m in masks]
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")
    results = []
    for k in range(n):
        r = {"image_id": image_id, "category_id": classes[k], "bbox": boxes[k].tolist(), "score": scores[k]}
        if rles is not None:
            r["segmentation"] = rles[k]
        results.append(r)
    return results


def _records_to_coco(records: list[dict], thing_classes: list[str]) -> dict:
    """A COCO instances dict from dense records (for datasets registered without a json file)."""
    from pycocotools import mask as mask_util

    images, anns = [], []
    for r in records:
        images.append({"id": r["image_id"], "height": r["height"], "width": r["width"], "file_name": r["file_name"]})
        for a in r.get("annotations", []):
            x0, y0, x1, y1 = a["bbox"]
            ann = {"id": len(anns) + 1, "image_id": r["image_id"], "category_id": a["category_id"],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": a.get("iscrowd", 0)}
            if "segmentation" in a:
                seg = a["segmentation"]
                rle = (mask_util.merge(mask_util.frPyObjects(seg, r["height"], r["width"])) if isinstance(seg, list)
                       else seg)
                ann["segmentation"], ann["area"] = seg, float(mask_util.area(rle))
            else:
                ann["area"] = float((x1 - x0) * (y1 - y0))
            anns.append(ann)
    cats = [{"id": i, "name": n} for i, n in enumerate(thing_classes)]
    return {"images": images, "annotations": anns, "categories": cats}


class COCOEvaluator(DatasetEvaluator):
    """Box ("bbox") and mask ("segm") AP of ``instances`` predictions against the dataset's COCO annotations.

    Results per task: AP, AP50, AP75, APs, APm, APl (in %) and ``AP-<class>`` per category.
    """

    def __init__(self, dataset_name: str, tasks: tuple[str, ...] | None = None):
        from pycocotools.coco import COCO

        self.dataset_name = dataset_name
        meta = MetadataCatalog.get(dataset_name)
        if meta.get("json_file") is None:
            records = DatasetCatalog.get(dataset_name)  # loaders that read a json record its path
        if meta.get("json_file") is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(meta.json_file)
            id_map = meta.get("thing_dataset_id_to_contiguous_id") or {c: c for c in self._coco.getCatIds()}
        else:
            self._coco = COCO()
            self._coco.dataset = _records_to_coco(records, list(meta.thing_classes))
            with contextlib.redirect_stdout(io.StringIO()):
                self._coco.createIndex()
            id_map = {i: i for i in range(len(meta.thing_classes))}
        self._to_contiguous = dict(id_map)
        self._to_dataset_id = {v: k for k, v in id_map.items()}
        self.class_names = list(meta.get("thing_classes", [str(i) for i in sorted(self._to_dataset_id)]))
        self.tasks = tasks
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []
        self._image_ids: list[int] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            self._image_ids.append(inp["image_id"])
            if "instances" in out:
                self._predictions.extend(instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"]))

    def evaluate(self) -> dict | None:
        preds = comm.gather(self._predictions)
        ids = comm.gather(self._image_ids)
        if not comm.is_main_process():
            return None
        preds = list(itertools.chain(*preds))
        img_ids = sorted(set(itertools.chain(*ids)))
        for p in preds:
            p["category_id"] = self._to_dataset_id[p["category_id"]]
        tasks = self.tasks or (("bbox", "segm") if any("segmentation" in p for p in preds) else ("bbox",))
        results = OrderedDict()
        for task in tasks:
            results[task] = self._evaluate_task(preds, img_ids, task)
        return results

    def _evaluate_task(self, preds: list[dict], img_ids: list[int], task: str) -> OrderedDict:
        from pycocotools.cocoeval import COCOeval

        res = OrderedDict((m, 0.0) for m in _METRICS)
        if not preds:
            logger.warning(f"No {task} predictions on {self.dataset_name}: AP is 0")
            res.update((f"AP-{n}", 0.0) for n in self.class_names)
            return res
        if task == "segm" and not all("segmentation" in p for p in preds):
            raise ValueError("segm evaluation needs pred_masks in every prediction")
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self._coco.loadRes(copy.deepcopy(preds))
            ev = COCOeval(self._coco, coco_dt, task)
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            ev.summarize()
        logger.info(f"COCOeval {task} on {self.dataset_name}:\n{summary.getvalue()}")
        for i, m in enumerate(_METRICS):
            res[m] = float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan")
        precision = ev.eval["precision"]  # [IoU thr, recall, class, area, max dets]
        per_class = []
        for k, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            ap = float(np.mean(p) * 100) if p.size else float("nan")
            name = self.class_names[self._to_contiguous[cat_id]]
            res[f"AP-{name}"] = ap
            per_class.append([name, f"{ap:.2f}"])
        logger.info(f"Per-class {task} AP:\n" + tabulate(per_class, headers=["class", "AP"], tablefmt="pipe"))
        return res


@register_as(EVALUATOR_REGISTRY, "coco")
def _coco_evaluator(cfg, dataset_name: str) -> COCOEvaluator:
    return COCOEvaluator(dataset_name)
