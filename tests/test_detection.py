"""Detection and instance segmentation: Mask R-CNN (GeneralizedRCNN) and RetinaNet.

mmdetection's arithmetic (anchors, deltas, assignment, aligned RoIAlign, mask paste-back), the papers' parameter
counts, released-checkpoint key layouts, inference edge cases, annotation validation, the data pipelines with
exactly resumable aspect-ratio grouping, training and evaluation on the synthetic instances, and the demo tool.
"""
import glob
import json
import logging
import math
import os
import uuid

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TorchvisionImageList
from torchvision.ops import roi_align

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.data import (BadSampleError, DatasetCatalog, DetectionDatasetMapper, build_train_loader,
                        get_dataset_dicts)
from dense.data.datasets import register_coco_instances
from dense.data.samplers import GroupedBatchSampler
from dense.data.transforms import RandomCropRange
from dense.engine import Trainer
from dense.modeling import META_ARCH_REGISTRY, build_model
from dense.modeling.detection import AnchorGenerator, BoxCoder, MaxIoUMatcher, ROIPooler, octave_sizes
from dense.structures import Instances, crop_and_resize, paste_masks_in_image
from dense.structures.masks import _paste_chunk
from dense.utils import comm

from conftest import PY, REPO, run_tool
from shared_data import shared_file

TINY = {"mask_rcnn": os.path.join(REPO, "tests", "configs", "tiny_mask_rcnn.yaml"),
        "retinanet": os.path.join(REPO, "tests", "configs", "tiny_retinanet.yaml")}
DETECTION_CONFIGS = sorted(p for arch in ("mask_rcnn", "retinanet")
                           for p in glob.glob(os.path.join(REPO, "configs", "coco", arch, "*.yaml")))


def _cfg(path, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def _tiny_model(arch, *opts):
    torch.manual_seed(0)
    return build_model(_cfg(TINY[arch], *opts))


# ------------------------------------------------------------------ mmdet arithmetic
def _mmdet_anchors(base_size, scales, ratios, feat_h, feat_w, stride):
    """mmdet 2.x AnchorGenerator, written from its formula: gen_single_level_base_anchors + single_level_grid_priors."""
    h_ratios = torch.sqrt(torch.tensor(ratios, dtype=torch.float64))
    w_ratios = 1 / h_ratios
    ws = (base_size * w_ratios[:, None] * torch.tensor(scales, dtype=torch.float64)[None, :]).reshape(-1)
    hs = (base_size * h_ratios[:, None] * torch.tensor(scales, dtype=torch.float64)[None, :]).reshape(-1)
    base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)
    xx = (torch.arange(feat_w, dtype=torch.float64) * stride).repeat(feat_h)
    yy = (torch.arange(feat_h, dtype=torch.float64) * stride).repeat_interleave(feat_w)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (base[None] + shifts[:, None]).reshape(-1, 4).float()


def test_anchors_follow_mmdet_formula():
    # Mask R-CNN RPN: scale 8 x strides 4, 8; ratios 0.5 / 1 / 2 (ratio-major order within a cell)
    a4, a8 = AnchorGenerator([4, 8], [[32.0], [64.0]], [[0.5, 1.0, 2.0]])([(2, 3), (1, 2)])
    r = math.sqrt(2) * 16
    assert torch.allclose(a4[:3], torch.tensor([[-r, -r / 2, r, r / 2], [-16, -16, 16, 16], [-r / 2, -r, r / 2, r]]))
    assert torch.allclose(a4[15], torch.tensor([-r + 8, -r / 2 + 4, r + 8, r / 2 + 4]))  # cell (y 1, x 2), anchor 0
    assert torch.allclose(a8, _mmdet_anchors(8, [8], [0.5, 1.0, 2.0], 1, 2, 8))
    # RetinaNet: octave base scale 4, 3 scales per octave (exact sizes 32 * 2^(k/3)), 9 anchors per cell
    sizes = octave_sizes([8, 16], 4, 3)
    assert sizes[0] == pytest.approx([32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    ours = AnchorGenerator([8, 16], sizes, [[0.5, 1.0, 2.0]])([(3, 2), (2, 1)])
    scales = [4 * 2 ** (k / 3) for k in range(3)]
    assert torch.allclose(ours[0], _mmdet_anchors(8, scales, [0.5, 1.0, 2.0], 3, 2, 8), atol=1e-5)
    assert torch.allclose(ours[1], _mmdet_anchors(16, scales, [0.5, 1.0, 2.0], 2, 1, 16), atol=1e-5)


def test_anchor_valid_flags_follow_mmdet():
    """In a batch padded to 64 x 128, an image padded on its own to 64 x 96 has valid anchors in the first
    ceil(96 / stride) columns only (mmdet valid_flags); the matcher ignores the others even without gts."""
    gen = AnchorGenerator([16, 32], [[32], [64]], [[0.5, 1.0, 2.0]])
    valid = gen.valid([(4, 8), (2, 4)], (64, 96))
    per_cell = valid.view(-1, 3)[:, 0]
    assert torch.equal(per_cell[:32].view(4, 8), torch.arange(8).expand(4, 8) < 6)
    assert torch.equal(per_cell[32:].view(2, 4), torch.arange(4).expand(2, 4) < 3)
    assert torch.equal(valid.view(-1, 3), per_cell[:, None].expand(-1, 3))
    matcher = MaxIoUMatcher(0.3, 0.7, 0.1)
    iou = torch.tensor([[0.1, 0.9, 0.2]])
    ok = torch.tensor([True, False, True])
    assert matcher(iou, ok)[1].tolist() == [0, -1, 1]  # the best valid anchor (0.2) is the gt's low-quality match
    assert matcher(torch.zeros((0, 3)), ok)[1].tolist() == [0, -1, 0]


def test_anchor_rounding_reproduces_torchvision():
    """MODEL.ANCHOR_GENERATOR.ROUND True gives torchvision's anchors (when image sizes are multiples of the strides)."""
    sizes, ratios = ((32,), (64,)), ((0.5, 1.0, 2.0),) * 2
    images = TorchvisionImageList(torch.zeros(1, 3, 64, 96), [(64, 96)])
    feats = [torch.zeros(1, 1, 16, 24), torch.zeros(1, 1, 8, 12)]
    tv = TorchvisionAnchorGenerator(sizes, ratios)(images, feats)[0]
    rounded = AnchorGenerator([4, 8], [[32], [64]], [[0.5, 1.0, 2.0]], round_to_int=True)([(16, 24), (8, 12)])
    exact = AnchorGenerator([4, 8], [[32], [64]], [[0.5, 1.0, 2.0]])([(16, 24), (8, 12)])
    assert torch.equal(torch.cat(rounded), tv)
    assert not torch.equal(torch.cat(exact), tv)


def test_box_coder_round_trip_and_mmdet_deltas():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))  # mmdet DeltaXYWHBBoxCoder target_stds (0.1, 0.1, 0.2, 0.2)
    anchors = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 16.0, 16.0]])
    gt = torch.tensor([[12.0, 18.0, 60.0, 44.0], [2.0, 3.0, 10.0, 20.0]])
    deltas = coder.encode_single(gt, anchors)
    # bbox2delta: centres (30, 30) -> (36, 31), sizes (40, 20) -> (48, 26), divided by the stds
    expected = torch.tensor([(36 - 30) / 40 / 0.1, (31 - 30) / 20 / 0.1,
                             math.log(48 / 40) / 0.2, math.log(26 / 20) / 0.2])
    assert torch.allclose(deltas[0], expected, atol=1e-6)
    assert torch.allclose(coder.decode_single(deltas, anchors), gt, atol=1e-4)
    # class-specific deltas [R, 4K] decode per class
    two = coder.decode_single(torch.cat([deltas, torch.zeros_like(deltas)], dim=1), anchors)
    assert torch.allclose(two[:, :4], gt, atol=1e-4) and torch.allclose(two[:, 4:], anchors)


def test_matcher_follows_mmdet_max_iou_assigner():
    matcher = MaxIoUMatcher(0.3, 0.7, min_pos_iou=0.3)
    iou = torch.tensor([[0.8, 0.5, 0.1, 0.2, 0.0],
                        [0.1, 0.6, 0.25, 0.2, 0.0]])
    matched, labels = matcher(iou)
    # 0: >= 0.7 -> gt 0; 1: best 0.6 is ignored by the thresholds but is gt 1's best -> gt 1; 2-4: below 0.3
    assert labels.tolist() == [1, 1, 0, 0, 0] and matched[:2].tolist() == [0, 1]
    # a gt's best below min_pos_iou is not recovered
    matched, labels = MaxIoUMatcher(0.2, 0.7, min_pos_iou=0.3)(torch.tensor([[0.25, 0.1]]))
    assert labels.tolist() == [-1, 0]
    # ties: every anchor at a gt's best IoU; an anchor best for two gts goes to the last of them (mmdet's loop)
    matched, labels = matcher(torch.tensor([[0.4, 0.4], [0.4, 0.1]]))
    assert labels.tolist() == [1, 1] and matched.tolist() == [1, 0]
    # low-quality matching off (< 0): only the thresholds
    assert MaxIoUMatcher(0.3, 0.7, -1)(iou)[1].tolist() == [1, -1, 0, 0, 0]
    matched, labels = matcher(torch.zeros((0, 3)))
    assert labels.tolist() == [0, 0, 0]


def test_aligned_roi_align_matches_torchvision_and_half_pixel_convention():
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    boxes = [torch.tensor([[4.0, 4.0, 60.0, 100.0], [0.0, 0.0, 120.0, 120.0]]),
             torch.tensor([[10.0, 20.0, 30.0, 25.0]])]
    pooler = ROIPooler(7, [1 / 4, 1 / 8], sampling_ratio=0, pooler_type="ROIAlignV2")
    # mmdet map_roi_levels: floor(log2(sqrt(area) / 56 + 1e-6)) clamped: 73 px -> 0, 120 px -> 1, 10 px -> 0
    assert pooler.levels(torch.cat(boxes)).tolist() == [0, 1, 0]
    out = pooler(feats, boxes)
    rois = torch.cat([torch.tensor([[0.0], [0.0], [1.0]]), torch.cat(boxes)], dim=1)
    for i, lvl in enumerate([0, 1, 0]):
        ref = roi_align(feats[lvl], rois[i:i + 1], 7, 1 / 4 * 0.5 ** lvl, 0, aligned=True)
        assert torch.allclose(out[i:i + 1], ref)
    # aligned sampling: pixel i covers [i, i + 1), so on f(x) = x a bin averages to its centre - 0.5
    ramp = torch.arange(32.0).expand(1, 1, 32, 32).contiguous()
    box = torch.tensor([[6.0, 4.0, 20.0, 18.0]])
    centres = 6 + (torch.arange(7.0) + 0.5) * 2
    aligned = ROIPooler(7, [1.0], 0, "ROIAlignV2")([ramp], [box])[0, 0]
    unaligned = ROIPooler(7, [1.0], 0, "ROIAlign")([ramp], [box])[0, 0]
    assert torch.allclose(aligned, (centres - 0.5).expand(7, 7), atol=1e-5)
    assert torch.allclose(unaligned, centres.expand(7, 7), atol=1e-5)


def test_mask_paste_back_and_crop():
    box = torch.tensor([[10.0, 20.0, 30.0, 50.0]])
    full = paste_masks_in_image(torch.ones(1, 28, 28), box, (64, 64))
    expected = torch.zeros(1, 64, 64, dtype=torch.bool)
    expected[0, 20:50, 10:30] = True  # pixels whose centres lie in the box
    assert torch.equal(full, expected)
    left = torch.zeros(1, 28, 28)
    left[:, :, :14] = 1
    half = paste_masks_in_image(left, box, (64, 64))
    expected[0, :, 20:] = False
    assert torch.equal(half, expected)
    # the whole-image path (used on GPUs) gives the same pixels as the per-box path
    probs = torch.rand(3, 28, 28)
    boxes = torch.tensor([[3.3, 5.1, 40.7, 33.2], [0.0, 0.0, 64.0, 48.0], [50.5, 30.2, 51.0, 31.0]])
    whole = _paste_chunk(probs, boxes, (0, 0, 64, 48)) >= 0.5
    assert torch.equal(paste_masks_in_image(probs, boxes, (48, 64)), whole)
    assert paste_masks_in_image(probs[:0], boxes[:0], (48, 64)).shape == (0, 48, 64)
    # RoI targets: RoIAlign of the bitmap in the box
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 8:24, 4:20] = True
    targets = crop_and_resize(masks, torch.tensor([[4.0, 8.0, 20.0, 24.0], [0.0, 0.0, 32.0, 32.0]]),
                              torch.tensor([0, 0]), 28)
    assert bool((targets[0] >= 0.5).all())
    assert abs(float((targets[1] >= 0.5).float().mean()) - 256 / 1024) < 0.02


# ------------------------------------------------------------------ papers' parameter counts
# (config, paper's count in millions, the paper's last printed digit)
PAPER_PARAMS = [
    ("mask_rcnn/davit_tiny_1x", 47.8, 0.1), ("mask_rcnn/davit_small_1x", 69.2, 0.1),
    ("mask_rcnn/davit_base_1x", 107.3, 0.1), ("retinanet/davit_tiny_1x", 38.5, 0.1),
    ("retinanet/davit_small_1x", 59.9, 0.1), ("retinanet/davit_base_1x", 98.5, 0.1),
    ("mask_rcnn/vit_adapter_tiny_deit_3x", 28, 1), ("mask_rcnn/vit_adapter_small_deit_3x", 48, 1),
    ("mask_rcnn/vit_adapter_base_deit_3x", 120, 1), ("mask_rcnn/dsan_t_1x", 24.3, 0.1),
    ("mask_rcnn/dsan_s_1x", 39.5, 0.1),
]
PAPER = {os.path.join(REPO, "configs", "coco", c + ".yaml"): (p, unit) for c, p, unit in PAPER_PARAMS}


@pytest.mark.parametrize("path", DETECTION_CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_detection_config_builds_with_the_papers_parameter_count(path):
    """Every COCO detection config builds (on the meta device: no memory) the mmdet module layout; where the paper
    gives the whole model's size, dense's count is within its last printed digit (DaViT Mask R-CNN T/S/B
    47.8/69.2/107.3M, RetinaNet 38.5/59.9/98.5M; ViT-Adapter Mask R-CNN T/S/B 28/48/120M; DSAN T/S 24.3/39.5M)."""
    cfg = _cfg(path)
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).from_config(cfg)
    heads = {"GeneralizedRCNN": ["rpn_head", "roi_head"], "RetinaNet": ["bbox_head"]}[cfg.MODEL.META_ARCHITECTURE]
    assert all(hasattr(model, h) for h in ["backbone", "neck", *heads])
    if path in PAPER:
        paper, unit = PAPER[path]
        assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - paper) < unit


# ------------------------------------------------------------------ released mmdet checkpoints
def _conv(keys, name, c_out, c_in, k):
    keys[f"{name}.weight"], keys[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)


def _mmdet_fpn(in_channels, start_level=0, extra_on_input=0):
    """mmdet FPN keys (out 256): lateral / fpn ConvModules, plus stride-2 convs for extra levels ('on_input')."""
    keys, used = {}, in_channels[start_level:]
    for i, c in enumerate(used):
        _conv(keys, f"neck.lateral_convs.{i}.conv", 256, c, 1)
        _conv(keys, f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    for j in range(extra_on_input):
        _conv(keys, f"neck.fpn_convs.{len(used) + j}.conv", 256, used[-1] if j == 0 else 256, 3)
    return keys


def _mmdet_mask_rcnn_heads(num_classes=80):
    """RPNHead, StandardRoIHead with Shared2FCBBoxHead and FCNMaskHead, as in mmdet 2.x mask_rcnn_r50_fpn."""
    keys = {}
    _conv(keys, "rpn_head.rpn_conv", 256, 256, 3)
    _conv(keys, "rpn_head.rpn_cls", 3, 256, 1)
    _conv(keys, "rpn_head.rpn_reg", 12, 256, 1)
    for name, shape in [("shared_fcs.0", (1024, 256 * 7 * 7)), ("shared_fcs.1", (1024, 1024)),
                        ("fc_cls", (num_classes + 1, 1024)), ("fc_reg", (4 * num_classes, 1024))]:
        keys[f"roi_head.bbox_head.{name}.weight"], keys[f"roi_head.bbox_head.{name}.bias"] = shape, shape[:1]
    for i in range(4):
        _conv(keys, f"roi_head.mask_head.convs.{i}.conv", 256, 256, 3)
    keys["roi_head.mask_head.upsample.weight"], keys["roi_head.mask_head.upsample.bias"] = (256, 256, 2, 2), (256,)
    _conv(keys, "roi_head.mask_head.conv_logits", num_classes, 256, 1)
    return keys


def _mmdet_retina_head(num_classes=80):
    """RetinaHead of mmdet 2.x retinanet_r50_fpn: 4-conv towers, 9 anchors."""
    keys = {}
    for i in range(4):
        _conv(keys, f"bbox_head.cls_convs.{i}.conv", 256, 256, 3)
        _conv(keys, f"bbox_head.reg_convs.{i}.conv", 256, 256, 3)
    _conv(keys, "bbox_head.retina_cls", 9 * num_classes, 256, 3)
    _conv(keys, "bbox_head.retina_reg", 9 * 4, 256, 3)
    return keys


def _released_backbone(file, variant, form):
    with open(shared_file("keys", file)) as f:
        table = json.load(f)[variant][form]
    return {k: tuple(v[0]) for k, v in table["keys"].items() if not v[1].startswith("torch.int")}


def _load_stand_in(model, keys, tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in sorted(keys.items())}
    path = str(tmp_path / "released.pth")
    torch.save({"meta": {"mmdet_version": "2.25.0"}, "state_dict": sd}, path)
    ck = DenseCheckpointer(model)
    ck.load(path)
    r = ck.last_report
    assert not r.missing and not r.unexpected and not r.mismatched and not r.dropped, r.summary()
    assert len(r.loaded) == len(sd)
    return sd


# released backbone key tables (tests/data/parity/golden/keys): DaViT's det/seg form and DAT++'s dense form
RELEASED_BACKBONES = {
    "davit_tiny": ("davit_keys.json", "tiny", "det_seg", [96, 192, 384, 768], "backbone.norm0."),
    "dat_pp_tiny": ("dat_keys.json", "dat_pp_tiny", "dense", [64, 128, 256, 512], "backbone.norms.0."),
}


@pytest.mark.parametrize("backbone", ["davit_tiny", "dat_pp_tiny"])
def test_released_mask_rcnn_checkpoint_loads_key_for_key(backbone, tmp_path):
    """A stand-in of the authors' Mask R-CNN release (mmdet layout: backbone.* as released, neck.*, rpn_head.*,
    roi_head.bbox_head.*, roi_head.mask_head.*; DAT-Detection's FPN adds an 'on_input' P6 conv) loads with
    nothing missing, unexpected or dropped."""
    file, variant, form, channels, _ = RELEASED_BACKBONES[backbone]
    keys = {**_released_backbone(file, variant, form), **_mmdet_fpn(channels, 0, int(backbone.startswith("dat"))),
            **_mmdet_mask_rcnn_heads()}
    model = build_model(_cfg(os.path.join(REPO, f"configs/coco/mask_rcnn/{backbone}_1x.yaml")))
    sd = _load_stand_in(model, keys, tmp_path)
    assert torch.equal(model.roi_head.mask_head.conv_logits.weight, sd["roi_head.mask_head.conv_logits.weight"])
    assert torch.equal(model.rpn_head.rpn_reg.bias, sd["rpn_head.rpn_reg.bias"])


@pytest.mark.parametrize("backbone", ["dat_pp_tiny", "davit_tiny"])
def test_released_retinanet_checkpoint_loads_key_for_key(backbone, tmp_path):
    """A stand-in of the authors' RetinaNet release (no norm on the unused stride-4 level: DAT-Detection builds
    none, DaViT's authors removed it; FPN from res3 with two 'on_input' extra convs; RetinaHead) loads key for
    key."""
    file, variant, form, channels, norm0 = RELEASED_BACKBONES[backbone]
    backbone_keys = {k: v for k, v in _released_backbone(file, variant, form).items() if not k.startswith(norm0)}
    keys = {**backbone_keys, **_mmdet_fpn(channels, 1, 2), **_mmdet_retina_head()}
    model = build_model(_cfg(os.path.join(REPO, f"configs/coco/retinanet/{backbone}_1x.yaml")))
    sd = _load_stand_in(model, keys, tmp_path)
    assert torch.equal(model.bbox_head.retina_cls.weight, sd["bbox_head.retina_cls.weight"])
    assert torch.equal(model.neck.fpn_convs[3].conv.weight, sd["neck.fpn_convs.3.conv.weight"])


# ------------------------------------------------------------------ inference edge cases
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinanet"])
def test_inference_on_empty_extreme_and_mixed_size_inputs(arch):
    """A batch of mixed sizes with an extreme aspect ratio (24 x 400, 300 x 20) returns detections at each input's
    height x width; a threshold no score reaches returns empty Instances of the right shapes."""
    g = torch.Generator().manual_seed(0)
    sizes = [(64, 64), (24, 400), (300, 20)]
    inputs = [{"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": 2 * h, "width": w}
              for h, w in sizes]
    key = "MODEL.ROI_HEADS.SCORE_THRESH_TEST" if arch == "mask_rcnn" else "MODEL.RETINANET.SCORE_THRESH_TEST"
    for thresh in (0.0, 1.0):
        model = _tiny_model(arch, key, thresh).eval()
        with torch.no_grad():
            outputs = model(inputs)
        for (h, w), out in zip(sizes, outputs):
            inst = out["instances"]
            assert inst.image_size == (2 * h, w)
            assert len(inst) == (0 if thresh == 1.0 else len(inst)) <= 100
            boxes = inst.pred_boxes
            assert bool(((boxes[:, 0::2] >= 0) & (boxes[:, 0::2] <= w) & (boxes[:, 1::2] <= 2 * h)).all())
            if arch == "mask_rcnn":
                assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (len(inst), 2 * h, w)
        if thresh == 0.0:
            assert sum(len(o["instances"]) for o in outputs) > 0


# ------------------------------------------------------------------ data
def _write_bad_coco(synthetic_root, tmp_path):
    """A 3-image copy of the synthetic training json with one malformed polygon (4 numbers, which pycocotools would
    read as a box) and one zero-width box."""
    with open(os.path.join(synthetic_root, "annotations", "instances_train.json")) as f:
        data = json.load(f)
    ids = {img["id"] for img in data["images"][:3]}
    data["images"] = data["images"][:3]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    data["annotations"][0]["segmentation"] = [[1.0, 2.0, 30.0, 40.0]]
    data["annotations"][1]["bbox"][2] = 0.0
    path = str(tmp_path / "bad.json")
    with open(path, "w") as f:
        json.dump(data, f)
    name = f"det_bad_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, path, os.path.join(synthetic_root, "images", "train"))
    return name, len(data["annotations"])


def test_bad_annotations_get_a_clear_error_or_a_counted_skip(synthetic_root, tmp_path, caplog):
    name, n_ann = _write_bad_coco(synthetic_root, tmp_path)
    cfg = _cfg(TINY["mask_rcnn"], "DATASETS.TRAIN", f"('{name}',)")
    with pytest.raises(BadSampleError) as e:
        build_train_loader(cfg, DetectionDatasetMapper(cfg, True), seed=0)
    msg = str(e.value)
    assert "2 invalid instance annotations" in msg and "malformed polygon" in msg and "degenerate box" in msg
    assert "DATALOADER.ON_BAD_SAMPLE skip" in msg
    cfg.DATALOADER.ON_BAD_SAMPLE = "skip"
    with caplog.at_level(logging.WARNING):
        records = get_dataset_dicts([name], filter_empty=True, on_bad_sample="skip", check_annotations=True)
    assert "Skipped 2 invalid annotations in" in caplog.text
    assert "1 malformed polygon" in caplog.text and "1 degenerate box" in caplog.text
    assert sum(len(r["annotations"]) for r in records) == n_ann - 2
    batch = next(iter(build_train_loader(cfg, DetectionDatasetMapper(cfg, True), seed=0)))
    assert all(len(x["instances"]) == len(x["instances"].gt_masks) for x in batch)
    DatasetCatalog.remove(name)


def test_coco_registration_names_the_missing_layout_and_masks_need_polygons(synthetic_root):
    with pytest.raises(FileNotFoundError, match="annotations/instances_val2017.json"):
        DatasetCatalog.get("coco_2017_val")
    record = dict(DatasetCatalog.get("synthetic_instances_train")[0])
    record["annotations"] = [{k: v for k, v in a.items() if k != "segmentation"} for a in record["annotations"]]
    with pytest.raises(BadSampleError, match="MODEL.MASK_ON"):
        DetectionDatasetMapper(_cfg(TINY["mask_rcnn"]), True)(record)
    assert len(DetectionDatasetMapper(_cfg(TINY["retinanet"]), True)(record)["instances"]) > 0


def test_detection_pipelines_single_scale_multi_scale_and_crop(synthetic_root):
    records = DatasetCatalog.get("synthetic_instances_train")[:4]
    base = [os.path.join(REPO, "configs", f) for f in ("Base-MaskRCNN.yaml", "coco/Base-COCO-Instances.yaml")]
    single = get_cfg()
    for f in base:
        single.merge_from_file(f)
    multi = single.clone()
    multi.merge_from_file(os.path.join(REPO, "configs", "coco", "Base-COCO-DETR-AutoAug.yaml"))
    multi.INPUT.FINAL_CROP_SIZE = (700, 900)
    choices = set(multi.INPUT.MIN_SIZE_TRAIN)
    torch.manual_seed(0)
    for r in records:
        h, w = r["height"], r["width"]
        out = DetectionDatasetMapper(single, True)(r)
        assert min(out["image"].shape[-2:]) == 800 or max(out["image"].shape[-2:]) == 1333
        for _ in range(3):
            out = DetectionDatasetMapper(multi, True)(r)
            oh, ow = out["image"].shape[-2:]
            assert oh <= 700 and ow <= 900
            assert min(oh, ow) in choices or oh == 700 or ow == 900  # the final crop cut a side
            inst = out["instances"]
            for box, m in zip(inst.gt_boxes, inst.gt_masks):
                ys, xs = torch.nonzero(m, as_tuple=True)
                if len(xs):
                    assert xs.min() >= box[0] - 3 and xs.max() + 1 <= box[2] + 3
        test = DetectionDatasetMapper(single, False)(r)
        assert ("instances" not in test and min(test["image"].shape[-2:]) == 800
                and (test["height"], test["width"]) == (h, w))
    # the crop: height and width each in [384, 600], boxes shifted and clipped
    sample = {"image": torch.zeros(3, 900, 1000, dtype=torch.uint8)}
    sample["boxes"] = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, 1000.0, 900.0]]), format="XYXY",
                                               canvas_size=(900, 1000))
    for _ in range(5):
        out = RandomCropRange(size_range=(384, 600))(sample)
        ch, cw = out["image"].shape[-2:]
        assert 384 <= ch <= 600 and 384 <= cw <= 600
        assert out["boxes"].tolist() == [[0.0, 0.0, float(cw), float(ch)]]


def test_aspect_ratio_grouping_resumes_exactly(monkeypatch, synthetic_root):
    """Batches hold one orientation; restarting at iteration k yields exactly the batches (indices and augmentation
    seeds) iterations k.. of an uninterrupted run yield, and processes split each global batch."""
    groups = [int(i % 3 == 0) for i in range(23)]

    def batches(start, n, rank=0, world=1):
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        it = iter(GroupedBatchSampler(groups, 4, seed=7, start_iter=start))
        return [next(it) for _ in range(n)]

    full = batches(0, 20)
    assert all(len({groups[i] for i, _ in b}) == 1 and len(b) == 4 for b in full)
    assert {groups[b[0][0]] for b in full} == {0, 1}
    assert batches(7, 13) == full[7:]
    r0, r1 = batches(0, 20, 0, 2), batches(0, 20, 1, 2)
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(b) for b in full]
    # through the loader: the mapped samples after a restart equal the uninterrupted run's
    monkeypatch.setattr(comm, "get_world_size", lambda: 1)
    monkeypatch.setattr(comm, "get_rank", lambda: 0)
    cfg = _cfg(TINY["mask_rcnn"])
    records = get_dataset_dicts(cfg.DATASETS.TRAIN)[:16]
    mapper = DetectionDatasetMapper(cfg, True)
    a = iter(build_train_loader(cfg, mapper, seed=3, start_iter=0, records=records))
    expected = [next(a) for _ in range(5)][3:]
    b = iter(build_train_loader(cfg, mapper, seed=3, start_iter=3, records=records))
    for batch in expected:
        got = next(b)
        assert [x["file_name"] for x in got] == [x["file_name"] for x in batch]
        assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["instances"].gt_boxes, y["instances"].gt_boxes)
                   for x, y in zip(batch, got))
        assert len({x["width"] > x["height"] for x in got}) == 1


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinanet"])
def test_detector_loss_falls_on_a_fixed_batch(arch, synthetic_root):
    cfg = _cfg(TINY[arch])
    records = DatasetCatalog.get("synthetic_instances_train")[:4]
    mapper = DetectionDatasetMapper(cfg, True)
    torch.manual_seed(0)
    batch = [mapper(r) for r in records]
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss_dict = model(batch)
        loss = sum(loss_dict.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    expected = {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"} if arch == "mask_rcnn" else {
        "loss_cls", "loss_bbox"}
    assert set(loss_dict) == expected
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinanet"])
def test_demo_config_trains_to_ap_well_above_untrained(arch, synthetic_root, tmp_path):
    """The synthetic demo config (ResNet-18 from scratch) trains in minutes; box (and mask) AP on the validation
    split end far above the untrained model's; --eval-only of the final checkpoint, and of the same weights saved
    in mmdet's released layout, reproduces the metrics exactly."""
    config = os.path.join(REPO, "configs", "synthetic", arch, "r18_demo.yaml")
    cfg = _cfg(config, "OUTPUT_DIR", str(tmp_path / "out"))
    untrained = Trainer.test(cfg, build_model(cfg))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trained = trainer.train()
    tasks = ["bbox", "segm"] if arch == "mask_rcnn" else ["bbox"]
    print(f"{arch} demo AP: " + ", ".join(f"{t} {untrained[t]['AP']:.1f} untrained -> {trained[t]['AP']:.1f}"
                                          for t in tasks))
    for task in tasks:
        assert trained[task]["AP"] > 30 and trained[task]["AP"] > untrained[task]["AP"] + 25, (untrained, trained)
    metrics = [json.loads(line) for line in open(tmp_path / "out" / "metrics.json")]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses  # Mask R-CNN: 1.85 -> 1.05 over 500 it
    final = [m for m in metrics if "bbox/AP" in m][-1]
    # the same weights in mmdet's released layout ({"meta", "state_dict"}; dense's names are mmdet's) evaluate
    # exactly as the training run's final evaluation
    weights = torch.load(tmp_path / "out" / "model_final.pth", weights_only=True)["model"]
    torch.save({"meta": {"mmdet_version": "2.25.0"}, "state_dict": weights}, tmp_path / "released.pth")
    run_tool([PY, "tools/train_net.py", "--config-file", config, "--eval-only", "MODEL.DEVICE", "cpu",
              "MODEL.WEIGHTS", str(tmp_path / "released.pth"), "OUTPUT_DIR", str(tmp_path / "eval")])
    evaluated = json.load(open(tmp_path / "eval" / "eval_results.json"))
    for k, v in final.items():
        if k.split("/")[0] in tasks:
            assert evaluated[k] == pytest.approx(v, abs=1e-9, nan_ok=True), k


def test_demo_tool_draws_instances(synthetic_root, tmp_path):
    """tools/demo.py on a Mask R-CNN: boxes, masks and class-name labels over the image, a legend beside it."""
    image = os.path.join(synthetic_root, "images", "val", "00000.jpg")
    run_tool([PY, "tools/demo.py", "--config-file", TINY["mask_rcnn"], "--input", image, "--output", str(tmp_path),
              "--confidence-threshold", "0", "--opts", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    vis = cv2.imread(str(tmp_path / "00000.png"))
    src = cv2.imread(image)
    assert vis.shape[0] >= src.shape[0] and vis.shape[1] > src.shape[1]  # legend panel on the right
    drawn = vis[: src.shape[0], : src.shape[1]].astype(int)
    assert np.abs(drawn - src.astype(int)).max() > 100  # boxes, labels and masks were drawn


@pytest.mark.parametrize("config", ["mask_rcnn/davit_tiny_1x", "mask_rcnn/vit_adapter_tiny_deit_3x",
                                    "retinanet/dat_pp_tiny_1x", "retinanet/davit_tiny_1x"])
def test_paper_configs_train_a_step_and_infer(config):
    """The papers' models (full width; fewer RoIs to keep the test fast) take a training step and infer on small
    images of mixed sizes."""
    cfg = _cfg(os.path.join(REPO, "configs", "coco", f"{config}.yaml"), "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
               "MODEL.RPN.POST_NMS_TOPK_TEST", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 96), (80, 64)]:
        inst = Instances((h, w), gt_boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]]), gt_classes=torch.tensor([3]),
                         gt_masks=torch.zeros(1, h, w, dtype=torch.bool))
        inst.gt_masks[0, 6:50, 4:40] = True
        batch.append({"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "instances": inst})
    losses = model(batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{k: v for k, v in x.items() if k != "instances"} for x in batch])
    assert [o["instances"].image_size for o in out] == [(64, 96), (80, 64)]


@pytest.mark.parametrize("rule,min_size,kept", [("strict", 0.0, 2), ("inclusive", 0.0, 3), ("strict", 10.0, 0),
                                                ("inclusive", 10.0, 2)])
def test_rpn_min_size_rule_of_each_mmdet_version(rule, min_size, kept):
    """MODEL.RPN.MIN_SIZE_RULE: mmdet >= 2.18 ("strict") drops a proposal clipped to zero width at MIN_SIZE 0 and
    keeps sides > MIN_SIZE; mmdet < 2.18 ("inclusive", DaViT's 2.11) filters only when MIN_SIZE > 0, keeping sides
    >= MIN_SIZE."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "tests", "configs", "tiny_mask_rcnn.yaml"))
    cfg.merge_from_list(["MODEL.RPN.MIN_SIZE_RULE", rule, "MODEL.RPN.MIN_SIZE", min_size, "MODEL.DEVICE", "cpu"])
    rpn = build_model(cfg).eval().rpn_head
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [60.0, 0.0, 70.0, 10.0]])]
    logits, deltas = [torch.tensor([[3.0, 2.0, 1.0]])], [torch.zeros(1, 3, 4)]  # boxes = anchors; the last one
    proposals = rpn.proposals(anchors, logits, deltas, [(50, 50)])[0]  # is clipped to x 50..50 (zero width)
    assert len(proposals) == kept
    with pytest.raises(ValueError, match="MODEL.RPN.MIN_SIZE_RULE must be"):
        cfg.MODEL.RPN.MIN_SIZE_RULE = "2.11"
        build_model(cfg)


@pytest.mark.parametrize("rule,expected", [
    ("pairs", {(0, 0), (1, 0)}),  # the 2 best (anchor, class) pairs: 0.9, 0.85
    ("anchors", {(0, 0), (0, 1), (1, 0), (1, 1)}),  # the 2 anchors of best top class (0, 1), every class above 0.05
])
def test_retinanet_candidate_rule_of_each_mmdet_version(rule, expected):
    """MODEL.RETINANET.CANDIDATE_RULE: per level, mmdet >= 2.18 keeps the TOPK best (anchor, class) pairs above the
    threshold ("pairs"); mmdet < 2.18 (DaViT's 2.11) keeps the TOPK anchors by their best class score, then all
    their classes above the threshold ("anchors")."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "tests", "configs", "tiny_retinanet.yaml"))
    cfg.merge_from_list(["MODEL.RETINANET.CANDIDATE_RULE", rule, "MODEL.RETINANET.TOPK_CANDIDATES_TEST", 2,
                         "MODEL.RETINANET.NUM_CLASSES", 2, "MODEL.DEVICE", "cpu"])
    head = build_model(cfg).eval().bbox_head
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 0.0, 50.0, 10.0]])]
    scores = torch.tensor([[0.9, 0.8], [0.85, 0.1], [0.7, 0.6]])  # [A, K]
    out = head.detect(anchors, [torch.logit(scores)[None]], [torch.zeros(1, 3, 4)], [(64, 64)])[0]
    anchor_of = {tuple(b): i for i, b in enumerate(anchors[0].tolist())}
    assert {(anchor_of[tuple(b)], int(c)) for b, c in zip(out.pred_boxes.tolist(), out.pred_classes)} == expected
    with pytest.raises(ValueError, match="MODEL.RETINANET.CANDIDATE_RULE must be"):
        cfg.MODEL.RETINANET.CANDIDATE_RULE = "2.11"
        build_model(cfg)


@pytest.mark.parametrize("field,value,message", [
    ("bbox", [1.0, 2.0, 3.0], r"has bbox \[1.0, 2.0, 3.0\]; COCO boxes are 4 numbers \[x, y, width, height\]"),
    ("category_id", 999, r"has category_id 999, which is not among the file's categories"),
])
def test_malformed_coco_annotation_is_named(synthetic_root, tmp_path, field, value, message):
    """A bbox of 3 numbers / a category_id missing from 'categories': a sentence naming the json, the annotation and
    its image (not 'not enough values to unpack' / 'KeyError: 999')."""
    from dense.data.datasets.coco import load_coco_json

    with open(os.path.join(synthetic_root, "annotations", "instances_train.json")) as f:
        data = json.load(f)
    data["annotations"][0][field] = value
    path = str(tmp_path / "bad.json")
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=rf"bad\.json: annotation {data['annotations'][0]['id']} of image .*{message}"):
        load_coco_json(path, os.path.join(synthetic_root, "images", "train"))
