import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dense.data import DatasetCatalog, MetadataCatalog
from dense.evaluation import COCOEvaluator, SemSegEvaluator
from dense.evaluation.sem_seg import metrics_from_confusion
from dense.structures import Instances


def test_sem_seg_metrics_by_hand(tmp_path):
    """3 classes, 255 ignored. Worked by hand:
    gt   = [0 0 0 1 1 2 2 2 255 1]
    pred = [0 0 0 1 2 2 2 0 2   1]     (the pixel with gt 255 is ignored)
    class 0: TP 3, GT 3, Pred 4 -> IoU 3/4, Acc 3/3
    class 1: TP 2, GT 3, Pred 2 -> IoU 2/3, Acc 2/3
    class 2: TP 2, GT 3, Pred 3 -> IoU 2/4, Acc 2/3
    pACC 7/9; all classes have GT frequency 1/3, so fwIoU = mIoU."""
    gt = np.array([[0, 0, 0, 1, 1], [2, 2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 0, 0, 1, 2], [2, 2, 0, 2, 1]])
    MetadataCatalog.get("_hand").set(stuff_classes=["a", "b", "c"], ignore_label=255)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    ev = SemSegEvaluator("_hand")
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).permute(2, 0, 1).float()
    ev.process([{"sem_seg_file_name": str(tmp_path / "gt.png")}], [{"sem_seg": logits}])
    r = ev.evaluate()["sem_seg"]
    assert (r["IoU-a"] == pytest.approx(75.0) and r["IoU-b"] == pytest.approx(200 / 3)
            and r["IoU-c"] == pytest.approx(50.0))
    assert r["mIoU"] == pytest.approx(100 * (3 / 4 + 2 / 3 + 2 / 4) / 3)
    assert r["mACC"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3) and r["pACC"] == pytest.approx(700 / 9)
    assert r["fwIoU"] == pytest.approx(r["mIoU"])


def test_absent_classes_follow_mmseg():
    """A class absent from the ground truth: IoU 0 if predicted (counts in mIoU), undefined (NaN, skipped) if
    not predicted either; its accuracy is undefined."""
    conf = np.array([[5, 1, 0], [0, 4, 0], [0, 0, 0]])
    r = metrics_from_confusion(conf, ["a", "b", "c"])
    assert np.isnan(r["IoU-c"]) and r["mIoU"] == pytest.approx(100 * (5 / 6 + 4 / 5) / 2)
    conf[1, 2] = 1
    r = metrics_from_confusion(conf, ["a", "b", "c"])
    assert r["IoU-c"] == 0.0 and r["mIoU"] == pytest.approx(100 * (5 / 6 + 4 / 6 + 0) / 3)
    assert np.isnan(r["ACC-c"])


def _fake_predictions(records, rng):
    """Noisy copies of the ground truth plus false positives, as dense Instances."""
    outputs = []
    for r in records:
        h, w = r["height"], r["width"]
        boxes, masks, classes, scores = [], [], [], []
        for a in r["annotations"]:
            m = mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))).astype(bool)
            if rng.random() < 0.7:
                m = np.roll(m, rng.integers(-3, 4), axis=1)
            box = np.array(a["bbox"], np.float32) + rng.normal(0, 2, 4).astype(np.float32)
            cls = a["category_id"] if rng.random() < 0.85 else int(rng.integers(4))
            boxes.append(box), masks.append(m), classes.append(cls), scores.append(rng.random())
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            m = np.zeros((h, w), bool)
            m[int(y):int(y) + 15, int(x):int(x) + 15] = True
            boxes.append(np.array([x, y, x + 15, y + 15], np.float32)), masks.append(m)
            classes.append(int(rng.integers(4))), scores.append(rng.random() * 0.5)
        inst = Instances((h, w), pred_boxes=torch.tensor(np.array(boxes)).reshape(-1, 4),
                         scores=torch.tensor(scores, dtype=torch.float32), pred_classes=torch.tensor(classes),
                         pred_masks=torch.from_numpy(np.array(masks)).reshape(-1, h, w))
        outputs.append({"instances": inst})
    return outputs


def test_coco_evaluator_equals_pycocotools(synthetic_root):
    name = "synthetic_instances_val"
    records = DatasetCatalog.get(name)[:40]
    outputs = _fake_predictions(records, np.random.default_rng(0))
    ev = COCOEvaluator(name)
    for r, o in zip(records, outputs):
        ev.process([r], [o])
    ours = ev.evaluate()

    # the same predictions, straight through pycocotools
    json_file = MetadataCatalog.get(name).json_file
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
    cat_ids = sorted(gt.getCatIds())
    results = []
    for r, o in zip(records, outputs):
        inst = o["instances"]
        for b, s, c, m in zip(inst.pred_boxes.tolist(), inst.scores.tolist(), inst.pred_classes.tolist(),
                              inst.pred_masks.numpy()):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": r["image_id"], "category_id": cat_ids[c], "score": s,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "segmentation": rle})
    for task in ("bbox", "segm"):
        with contextlib.redirect_stdout(io.StringIO()):
            ce = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), task)
            ce.params.imgIds = [r["image_id"] for r in records]
            ce.evaluate(), ce.accumulate(), ce.summarize()
        for i, metric in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
            ref = ce.stats[i] * 100
            if ref < 0:
                assert np.isnan(ours[task][metric])
            else:
                assert ours[task][metric] == pytest.approx(ref, abs=1e-9), (task, metric)
        assert 20 < ours[task]["AP"] < 100  # a meaningful case, neither empty nor perfect


def test_coco_evaluator_without_predictions(synthetic_root):
    ev = COCOEvaluator("synthetic_instances_val")
    r = DatasetCatalog.get("synthetic_instances_val")[0]
    ev.process([r], [{"instances": Instances((r["height"], r["width"]), pred_boxes=torch.zeros(0, 4),
                                             scores=torch.zeros(0), pred_classes=torch.zeros(0, dtype=torch.long))}])
    assert ev.evaluate()["bbox"]["AP"] == 0.0
