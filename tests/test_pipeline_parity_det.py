"""Whole-pipeline parity of the DaViT COCO detectors with the authors' own pipeline: dense's test path (image file ->
test mapper -> Mask R-CNN / RetinaNet -> detections at the original size) gives the detections that the DaViT
authors' mmdet 2.11 pipeline (dingmyu/davit's mmdet tree over mmcv-full 1.3.0, `inference_detector` with the
configs' test pipeline and test_cfg) gives on a real photograph (matplotlib's grace_hopper.jpg), with the same
stand-in weights. Reference data: tests/data/parity/mmdet_davit_detections.pt (see its ``notes`` and
tests/data/parity/make_mmdet_davit_detections.py); both sides use the same narrowed DaViT backbone (stored as
config options) to keep this fast."""
import hashlib
import os

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.data import build_mapper
from dense.modeling import build_model

from conftest import REPO, sample_photo
from shared_data import stand_in_weights

PARITY = os.path.join(REPO, "tests", "data", "parity", "mmdet_davit_detections.pt")
DETECTORS = ["mask_rcnn", "retinanet"]
BOX_IOU = 0.99  # every detection matched one to one, same label, at least this box IoU
SCORE_ATOL = 1e-4  # float noise: the reference ran on another torch build with mmcv's C++ ops
MASK_IOU = 0.99  # per mask; a mask differing in at most MASK_PIXELS pixels passes too (tiny masks: one pixel
MASK_PIXELS = 2  # flipped by float noise at the 0.5 threshold would break an IoU bound)


@pytest.fixture(scope="module")
def reference():
    if not os.path.isfile(PARITY):
        pytest.fail(f"parity data {os.path.relpath(PARITY, REPO)} not found: the checkout is incomplete",
                    pytrace=False)
    return torch.load(PARITY, weights_only=True)


def _weights(ref: dict, det: dict) -> dict:
    """The reference's stand-in weights (mmdet layout), tweaks applied in the stored order."""
    w = stand_in_weights(det["keys"], ref["seed"])
    for key, op, value in det["tweaks"]:
        w[key] = w[key] * value if op == "mul" else w[key] + value
    return w


_RUNS = {}


def _dense_run(reference, name: str, tmp_path_factory) -> dict:
    """dense's public inference path on the photograph, once per detector: config + the stored shrink options,
    the stand-in weights as an mmdet checkpoint loaded by DenseCheckpointer, the test mapper, model.eval()."""
    if name in _RUNS:
        return _RUNS[name]
    det = reference["detectors"][name]
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, det["dense_config"]))
    cfg.merge_from_list(list(det["dense_opts"]))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    path = str(tmp_path_factory.mktemp(name) / "mmdet_stand_in.pth")
    torch.save({"meta": {}, "state_dict": _weights(reference, det)}, path)
    checkpointer = DenseCheckpointer(model)
    checkpointer.load(path)
    inputs = build_mapper(cfg, is_train=False)({"file_name": sample_photo()})
    model.eval()
    with torch.no_grad():
        out = model([inputs])[0]["instances"]
    _RUNS[name] = {"cfg": cfg, "report": checkpointer.last_report, "inputs": inputs, "instances": out}
    return _RUNS[name]


def test_reference_input_is_this_photograph(reference):
    import cv2

    src = reference["source"]
    assert hashlib.sha256(open(sample_photo(), "rb").read()).hexdigest() == src["sha256"]
    bgr = cv2.imread(sample_photo(), cv2.IMREAD_COLOR)
    assert hashlib.sha256(bgr.tobytes()).hexdigest() == src["decoded_bgr_sha256"]


@pytest.mark.parametrize("name", DETECTORS)
def test_reference_settings_are_the_configs(reference, name):
    """The reference ran the configs' test settings, which dense's config holds too."""
    det = reference["detectors"][name]
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, det["dense_config"]))
    t = det["test_cfg"]
    if name == "mask_rcnn":
        assert t["rpn"] == {"nms_pre": 1000, "max_per_img": 1000, "nms": {"type": "nms", "iou_threshold": 0.7},
                            "min_bbox_size": 0}
        assert t["rcnn"] == {"score_thr": 0.05, "nms": {"type": "nms", "iou_threshold": 0.5}, "max_per_img": 100,
                             "mask_thr_binary": 0.5}
        r, h = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS
        assert (r.PRE_NMS_TOPK_TEST, r.POST_NMS_TOPK_TEST, r.NMS_THRESH, r.MIN_SIZE) == (1000, 1000, 0.7, 0.0)
        assert r.MIN_SIZE_RULE == "inclusive"  # mmdet 2.11 keeps zero-size proposals
        assert (h.SCORE_THRESH_TEST, h.NMS_THRESH_TEST) == (0.05, 0.5)
        assert cfg.MODEL.ROI_MASK_HEAD.MASK_THRESHOLD == 0.5
    else:
        assert t == {"nms_pre": 1000, "min_bbox_size": 0, "score_thr": 0.05,
                     "nms": {"type": "nms", "iou_threshold": 0.5}, "max_per_img": 100}
        r = cfg.MODEL.RETINANET
        assert (r.TOPK_CANDIDATES_TEST, r.SCORE_THRESH_TEST, r.NMS_THRESH_TEST) == (1000, 0.05, 0.5)
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert cfg.INPUT.RESIZE_BACKEND == "cv2" and (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (800, 1333)


@pytest.mark.parametrize("name", DETECTORS)
def test_dense_loads_the_mmdet_checkpoint_completely(reference, name, tmp_path_factory):
    report = _dense_run(reference, name, tmp_path_factory)["report"]
    assert not report.missing, report.summary()
    assert not report.unexpected, report.summary()
    assert not report.mismatched, report.summary()
    assert len(report.loaded) + len(report.dropped) == len(reference["detectors"][name]["keys"]), report.summary()
    # the authors' RetinaNet holds norm0 (their DaViT makes it) although the FPN starts at res3: dropped, with a reason
    expected_dropped = {"backbone.norm0.weight", "backbone.norm0.bias"} if name == "retinanet" else set()
    assert set(report.dropped) == expected_dropped, report.summary()


@pytest.mark.parametrize("name", DETECTORS)
def test_test_input_equals_mmdet(reference, name, tmp_path_factory):
    """The mapped image is mmdet's Resize(1333x800, keep_ratio) output bit for bit (before Normalize / Pad)."""
    run = _dense_run(reference, name, tmp_path_factory)
    det = reference["detectors"][name]
    image = run["inputs"]["image"]
    bgr = image.flip(0) if run["cfg"].INPUT.FORMAT == "RGB" else image
    hwc = np.ascontiguousarray(bgr.permute(1, 2, 0).numpy())
    assert list(hwc.shape) == list(det["img_meta"]["img_shape"])
    assert hashlib.sha256(hwc.tobytes()).hexdigest() == det["resized_sha256"]
    assert (run["inputs"]["height"], run["inputs"]["width"]) == tuple(det["img_meta"]["ori_shape"][:2])


def _match(ref_boxes, ref_labels, boxes, labels):
    """One-to-one matching of same-label detections by box IoU: (ref index, dense index, IoU) of the best
    assignment, and the IoU matrix."""
    iou = box_iou(ref_boxes.double(), boxes.double())
    iou[ref_labels[:, None] != labels[None, :]] = 0
    r, c = linear_sum_assignment(-iou.numpy())
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(r, c)], iou


@pytest.mark.parametrize("name", DETECTORS)
def test_detections_match_mmdet(reference, name, tmp_path_factory):
    det = reference["detectors"][name]
    inst = _dense_run(reference, name, tmp_path_factory)["instances"]
    ref_boxes, ref_scores, ref_labels = det["boxes"], det["scores"], det["labels"]
    assert len(ref_scores) >= 10, "the reference must hold meaningful detections"
    assert len(set(ref_labels.tolist())) >= 3
    assert inst.image_size == tuple(det["img_meta"]["ori_shape"][:2])
    boxes, scores, labels = inst.pred_boxes.cpu(), inst.scores.cpu(), inst.pred_classes.cpu()
    pairs, _ = _match(ref_boxes, ref_labels, boxes, labels)
    good = [(i, j, v) for i, j, v in pairs if v >= BOX_IOU]
    ref_unmatched = sorted(set(range(len(ref_scores))) - {i for i, _, _ in good})
    ours_unmatched = sorted(set(range(len(scores))) - {j for _, j, _ in good})
    assert not ref_unmatched and not ours_unmatched, (
        f"{name}: {len(good)}/{len(ref_scores)} mmdet detections matched (IoU >= {BOX_IOU}, same label); "
        f"mmdet unmatched {[(i, int(ref_labels[i]), float(ref_scores[i])) for i in ref_unmatched][:10]}; "
        f"dense unmatched {[(j, int(labels[j]), float(scores[j])) for j in ours_unmatched][:10]}")
    i, j = torch.tensor([p[0] for p in good]), torch.tensor([p[1] for p in good])
    assert min(v for _, _, v in good) >= BOX_IOU
    assert (scores[j] - ref_scores[i]).abs().max() <= SCORE_ATOL
    assert (boxes[j] - ref_boxes[i]).abs().max() <= 0.05  # pixels at the original size


def test_masks_match_mmdet(reference, tmp_path_factory):
    import pycocotools.mask as mask_util

    det = reference["detectors"]["mask_rcnn"]
    inst = _dense_run(reference, "mask_rcnn", tmp_path_factory)["instances"]
    h, w = det["img_meta"]["ori_shape"][:2]
    pairs, _ = _match(det["boxes"], det["labels"], inst.pred_boxes.cpu(), inst.pred_classes.cpu())
    assert len(pairs) == len(det["masks"]) == len(inst)
    bad = []
    for i, j, _ in pairs:
        ref = mask_util.decode({"size": [h, w], "counts": det["masks"][i].encode("ascii")}).astype(bool)
        assert int(ref.sum()) == int(det["mask_areas"][i])
        ours = inst.pred_masks[j].cpu().numpy()
        assert ours.shape == ref.shape
        union, differ = int((ref | ours).sum()), int((ref ^ ours).sum())
        iou = 1.0 if union == 0 else 1.0 - differ / union
        if iou < MASK_IOU and differ > MASK_PIXELS:
            bad.append((i, int(det["labels"][i]), union, differ))
    assert not bad, f"masks differing from mmdet's (index, label, union, pixels differing): {bad[:10]}"
