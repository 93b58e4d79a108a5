"""Mask2Former: matcher against brute force, losses against a plain reimplementation, PQ worked by hand, training on
the synthetic semantic / instance / panoptic data with each task's evaluator, inference modes, whole-model parameter
counts of the papers, and released checkpoints (ViT-Adapter mmseg .zip, Detectron2 .pkl) loading completely."""
import glob
import itertools
import json
import math
import os
import pickle
import zipfile

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dense.checkpoint import DenseCheckpointer
from dense.config import get_cfg
from dense.data import DatasetCatalog, build_mapper, get_dataset_dicts
from dense.evaluation import COCOPanopticEvaluator, build_evaluator
from dense.evaluation.panoptic import pq_average, pq_stats
from dense.modeling import META_ARCH_REGISTRY, build_model
from dense.modeling.heads.mask2former import HungarianMatcher, SetCriterion, uncertain_point_coords
from dense.modeling.meta_arch.mask_former_inference import (instance_inference, panoptic_inference, semantic_scores,
                                                             upsample_mask_logits)
from dense.structures import Instances

from conftest import PY, REPO, run_tool
from shared_data import shared_file

TINY = os.path.join(REPO, "tests", "configs", "tiny_mask2former.yaml")


def _cfg(*files, opts=()):
    cfg = get_cfg()
    for f in files:
        cfg.merge_from_file(f if os.path.isabs(f) else os.path.join(REPO, f))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


# ------------------------------------------------------------------ reference maths (plain loops, no torch ops)
def _bilinear(img: np.ndarray, x: float, y: float) -> float:
    """grid_sample(align_corners=False, zero padding) at normalised (x, y) in [0, 1], written out."""
    h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    value = 0.0
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                value += wy * wx * float(img[yy, xx])
    return value


def _bce(logit: float, target: float) -> float:
    return max(logit, 0) - logit * target + math.log1p(math.exp(-abs(logit)))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _mask_terms(logits: np.ndarray, mask: np.ndarray, coords: np.ndarray) -> tuple[float, float]:
    """(mean BCE, dice) of one predicted mask against one target on the given points."""
    p = [_bilinear(logits, x, y) for x, y in coords]
    t = [_bilinear(mask, x, y) for x, y in coords]
    bce = sum(_bce(a, b) for a, b in zip(p, t)) / len(p)
    s = [_sigmoid(a) for a in p]
    dice = 1 - (2 * sum(a * b for a, b in zip(s, t)) + 1) / (sum(s) + sum(t) + 1)
    return bce, dice


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _random_case(seed: int, q: int, m: int, k: int = 4, size=(12, 10)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(q, k + 1, generator=g) * 2
    mask_logits = torch.randn(q, 6, 5, generator=g) * 3
    labels = torch.randint(0, k, (m,), generator=g)
    masks = torch.rand(m, *size, generator=g) > 0.6
    return logits, mask_logits, labels, masks


@pytest.mark.parametrize("seed,q,m", [(0, 5, 3), (1, 4, 4), (2, 6, 2), (3, 5, 1), (4, 3, 3)])
def test_matcher_equals_brute_force(seed, q, m):
    """The matcher's costs equal a loop reimplementation at the points it drew, and its assignment has the minimum
    total cost over every one-to-one assignment of targets to queries."""
    logits, mask_logits, labels, masks = _random_case(seed, q, m)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=40)
    torch.manual_seed(100 + seed)
    (rows, cols), = matcher({"pred_logits": logits[None], "pred_masks": mask_logits[None]},
                            [{"labels": labels, "masks": masks}])
    torch.manual_seed(100 + seed)
    coords = torch.rand(1, 40, 2)[0].numpy()  # the matcher draws one torch.rand(1, P, 2) per image
    cost = np.zeros((q, m))
    for i in range(q):
        prob = _softmax(logits[i].numpy())
        for j in range(m):
            bce, dice = _mask_terms(mask_logits[i].numpy(), masks[j].float().numpy(), coords)
            cost[i, j] = 2.0 * -prob[labels[j]] + 5.0 * bce + 5.0 * dice
    np.testing.assert_allclose(matcher.cost_matrix(logits, mask_logits, labels, masks,
                                                   torch.from_numpy(coords)).numpy(),
                               cost, rtol=1e-5, atol=1e-5)
    best = min(sum(cost[perm[j], j] for j in range(m)) for perm in itertools.permutations(range(q), m))
    assert sorted(cols.tolist()) == list(range(m))
    assert abs(sum(cost[r, c] for r, c in zip(rows.tolist(), cols.tolist())) - best) < 1e-6


def test_uncertain_points_follow_the_recipe():
    """Of int(P * oversample) uniform candidates the int(P * importance) with the smallest |logit| come first, the
    rest of the P points are fresh uniform draws (PointRend's get_uncertain_point_coords_with_randomness)."""
    logits = torch.randn(3, 8, 8) * 4
    torch.manual_seed(7)
    coords = uncertain_point_coords(logits, 20, 3.0, 0.75)
    torch.manual_seed(7)
    candidates = torch.rand(3, 60, 2)
    rest = torch.rand(3, 5, 2)
    assert coords.shape == (3, 20, 2)
    torch.testing.assert_close(coords[:, 15:], rest)
    for r in range(3):
        certainty = [abs(_bilinear(logits[r].numpy(), float(x), float(y))) for x, y in candidates[r]]
        expected = {tuple(candidates[r, i].tolist()) for i in np.argsort(certainty, kind="stable")[:15]}
        assert {tuple(c) for c in coords[r, :15].tolist()} == expected


def test_criterion_equals_reference():
    """Every weighted term (class CE with no-object weight 0.1, BCE and dice on the sampled points, for the final and
    each auxiliary prediction) equals a loop reimplementation given the same matching and points; an image without
    targets only contributes no-object cross-entropy."""
    k, q = 4, 5
    g = torch.Generator().manual_seed(3)

    def prediction():
        return {"pred_logits": torch.randn(2, q, k + 1, generator=g),
                "pred_masks": torch.randn(2, q, 6, 5, generator=g) * 3}

    outputs = prediction()
    outputs["aux_outputs"] = [prediction(), prediction()]
    targets = [{"labels": torch.tensor([1, 3, 1]), "masks": torch.rand(3, 12, 10, generator=g) > 0.5},
               {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 12, 10, dtype=torch.bool)}]
    criterion = SetCriterion(k, HungarianMatcher(num_points=30), eos_coef=0.1, num_points=30, num_aux=2)
    matched, points = [], []
    match, sample = criterion.matcher.forward, criterion.sample_points
    criterion.matcher.forward = lambda o, t: matched.append(match(o, t)) or matched[-1]
    criterion.sample_points = lambda logits: points.append(sample(logits)) or points[-1]
    losses = criterion(outputs, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    sets = [outputs] + outputs["aux_outputs"]
    for s, (suffix, out) in enumerate(zip(["", "_0", "_1"], sets)):
        num, den, bce, dice, r = 0.0, 0.0, 0.0, 0.0, 0
        for b in range(2):
            assignment = dict(zip(matched[s][b][0].tolist(), matched[s][b][1].tolist()))
            for i in range(q):
                target = int(targets[b]["labels"][assignment[i]]) if i in assignment else k
                weight = 0.1 if target == k else 1.0
                num += weight * -math.log(_softmax(out["pred_logits"][b, i].numpy())[target])
                den += weight
            for i, j in sorted(assignment.items()):
                terms = _mask_terms(out["pred_masks"][b, i].numpy(), targets[b]["masks"][j].float().numpy(),
                                    points[s][r].numpy())
                bce, dice, r = bce + terms[0], dice + terms[1], r + 1
        assert r == 3
        assert losses["loss_ce" + suffix].item() == pytest.approx(num / den, rel=1e-5)
        assert losses["loss_mask" + suffix].item() == pytest.approx(bce / 3, rel=1e-4)
        assert losses["loss_dice" + suffix].item() == pytest.approx(dice / 3, rel=1e-4)


# ------------------------------------------------------------------ panoptic quality
def _hand_built_panoptic():
    """A 10 x 10 image, classes 0 stuff "A", 1 thing "B", 2 thing "C", 3 stuff "D" (absent).

    Ground truth: g1 A rows 0-4 (50 px); g2 B rows 5-9 x cols 0-4 (25); g3 B crowd rows 5-9 x cols 5-7 (15);
    void rows 5-9 x cols 8-9 (10).
    Prediction: p1 A rows 0-5 (60 px: 50 on g1, 2 on void); p2 B rows 6-9 x cols 0-3 (16, inside g2);
    p3 B rows 6-9 x cols 5-9 (20: 12 on the B crowd, 8 on void); p4 C rows 6-9 x col 4 (4, on g2).
    """
    gt = np.zeros((10, 10), np.int64)
    gt[0:5] = 1
    gt[5:, 0:5] = 2
    gt[5:, 5:8] = 3
    pred = np.zeros((10, 10), np.int64)
    pred[0:6] = 1
    pred[6:, 0:4] = 2
    pred[6:, 4] = 4
    pred[6:, 5:] = 3
    gt_segments = [{"id": 1, "category_id": 0, "iscrowd": 0, "area": 50},
                   {"id": 2, "category_id": 1, "iscrowd": 0, "area": 25},
                   {"id": 3, "category_id": 1, "iscrowd": 1, "area": 15}]
    pred_segments = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 1},
                     {"id": 4, "category_id": 2}]
    return gt, gt_segments, pred, pred_segments


def test_pq_worked_by_hand():
    """panopticapi's rules, by hand: (g1, p1) IoU = 50 / (60 + 50 - 50 - 2 void) = 50/58 > 0.5: TP of A;
    (g2, p2) IoU = 16/25: TP of B; p3 is unmatched but (8 void + 12 same-class crowd) / 20 > 0.5: ignored;
    p4 (C) is unmatched with nothing to excuse it: FP of C; g3 is crowd: no FN; D never occurs: not averaged.
    PQ_A = SQ_A = 50/58, RQ_A = 1; PQ_B = SQ_B = 0.64, RQ_B = 1; PQ_C = SQ_C = RQ_C = 0 (0 / (0 + 0.5)).
    All: PQ = SQ = (50/58 + 0.64) / 3, RQ = 2/3; things (B, C): PQ = SQ = 0.32, RQ = 0.5; stuff: 50/58, 50/58, 1."""
    gt, gt_segments, pred, pred_segments = _hand_built_panoptic()
    stats = pq_stats(gt, gt_segments, pred, pred_segments)
    assert stats == {0: [pytest.approx(50 / 58), 1, 0, 0], 1: [pytest.approx(0.64), 1, 0, 0], 2: [0.0, 0, 1, 0]}
    isthing = {0: False, 1: True, 2: True, 3: False}
    all_, per_class = pq_average(stats, isthing, None)
    assert all_ == {"pq": pytest.approx((50 / 58 + 0.64) / 3), "sq": pytest.approx((50 / 58 + 0.64) / 3),
                    "rq": pytest.approx(2 / 3), "n": 3}
    assert per_class[3] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    things, _ = pq_average(stats, isthing, True)
    assert things == {"pq": pytest.approx(0.32), "sq": pytest.approx(0.32), "rq": pytest.approx(0.5), "n": 2}
    stuff, _ = pq_average(stats, isthing, False)
    assert stuff == {"pq": pytest.approx(50 / 58), "sq": pytest.approx(50 / 58), "rq": pytest.approx(1.0), "n": 1}


def test_panoptic_evaluator_accumulates_images(tmp_path):
    """Through the evaluator (ground truth read from COCO-panoptic PNGs): the image above plus one where a B
    prediction covers half of a B segment (IoU exactly 0.5 is no match: one FN and one FP of B). B then has
    tp 1, fp 1, fn 1: PQ_B = 0.64 / 2 = 0.32, SQ_B = 0.64, RQ_B = 0.5."""
    from dense.data import MetadataCatalog

    name = "pq_hand_built"
    if name not in DatasetCatalog:
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(stuff_classes=["A", "B", "C", "D"],
                                      thing_dataset_id_to_contiguous_id={2: 1, 3: 2})
    gt, gt_segments, pred, pred_segments = _hand_built_panoptic()
    gt2 = np.zeros((4, 4), np.int64)
    gt2[:2] = 7
    pred2 = np.zeros((4, 4), np.int64)
    pred2[0] = 1
    inputs, outputs = [], []
    for i, (g, gs, p, ps) in enumerate([(gt, gt_segments, pred, pred_segments),
                                         (gt2, [{"id": 7, "category_id": 1, "iscrowd": 0, "area": 8}], pred2,
                                          [{"id": 1, "category_id": 1}])]):
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(np.stack([g % 256, g // 256 % 256, g // 65536], -1).astype(np.uint8)).save(path)
        inputs.append({"pan_seg_file_name": path, "segments_info": gs})
        outputs.append({"panoptic_seg": (torch.from_numpy(p).int(), ps)})
    ev = COCOPanopticEvaluator(name)
    ev.process(inputs, outputs)
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ-B"] == pytest.approx(32.0) and res["PQ-A"] == pytest.approx(100 * 50 / 58) and res["PQ-C"] == 0
    assert res["PQ"] == pytest.approx(100 * (50 / 58 + 0.32) / 3)
    assert res["SQ_th"] == pytest.approx(32.0) and res["RQ_th"] == pytest.approx(25.0)


# ------------------------------------------------------------------ inference
def test_inference_postprocessing():
    """Chunked upsampling equals one-shot upsampling; "scores" and "masks" semantic upsampling agree on argmax for
    smooth inputs; panoptic segments never overlap and stuff of one class merges; instances are the top-k pairs."""
    g = torch.Generator().manual_seed(0)
    cls, masks = torch.randn(7, 4, generator=g), torch.randn(7, 8, 8, generator=g)
    torch.testing.assert_close(upsample_mask_logits(masks, (32, 32), (30, 28), (15, 14), chunk=2),
                               upsample_mask_logits(masks, (32, 32), (30, 28), (15, 14), chunk=7))
    a = semantic_scores(cls, masks, (32, 32), (30, 28), "masks", chunk=3)
    torch.testing.assert_close(a, semantic_scores(cls, masks, (32, 32), (30, 28), "masks", chunk=7))
    assert a.shape == (3, 30, 28) and semantic_scores(cls, masks, (32, 32), (30, 28), "scores", 3).shape == (3, 30, 28)

    cls = torch.full((4, 4), -10.0)
    cls[0, 0] = cls[1, 0] = cls[2, 1] = 10.0  # queries 0, 1: stuff class 0; query 2: thing class 1; 3: no object
    cls[3, 3] = 10.0
    masks = torch.full((4, 6, 6), -10.0)
    masks[0, :3], masks[1, 3:, :3], masks[2, 3:, 3:], masks[3] = 10.0, 10.0, 10.0, 10.0
    seg, info = panoptic_inference(cls, masks, thing_ids={1, 2})
    assert info == [{"id": 1, "isthing": False, "category_id": 0}, {"id": 2, "isthing": True, "category_id": 1}]
    assert (seg[:3] == 1).all() and (seg[3:, :3] == 1).all() and (seg[3:, 3:] == 2).all()

    inst = instance_inference(cls, masks, topk=2)
    assert len(inst) == 2 and set(inst.pred_classes.tolist()) <= {0, 1} and inst.pred_masks.dtype == torch.bool
    assert inst.pred_boxes[inst.pred_classes == 1].tolist() == [[3.0, 3.0, 6.0, 6.0]]


def test_inference_modes():
    """Whole, slide (a window covering the image equals whole), multi-scale + flip, PAD_TO_SIZE, and one pass for all
    three tasks, each at the requested output size."""
    cfg = _cfg(TINY)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    with torch.no_grad():
        whole = model([{"image": image}])[0]["sem_seg"]
        model.test_mode, model.slide_crop, model.slide_stride = "slide", (96, 96), (64, 64)
        torch.testing.assert_close(model([{"image": image}])[0]["sem_seg"], whole)
        model.slide_crop, model.slide_stride = (48, 48), (32, 32)
        assert model([{"image": image, "height": 35, "width": 45}])[0]["sem_seg"].shape == (6, 35, 45)
        model.test_mode, model.aug_ratios, model.aug_flip, model.pad_to_size = "whole", (0.75, 1.0), True, 96
        probs = model([{"image": image}])[0]["sem_seg"]
        assert probs.shape == (6, 70, 90) and torch.allclose(probs.sum(0), torch.ones(70, 90), atol=1e-5)
    cfg = _cfg(TINY, opts=["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "True",
                           "DATASETS.TEST", "('synthetic_panoptic_val',)"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": image, "height": 35, "width": 45}])[0]
    assert out["sem_seg"].shape == (6, 35, 45) and out["panoptic_seg"][0].shape == (35, 45)
    assert out["instances"].image_size == (35, 45)
    with pytest.raises(ValueError, match="semantic only"):
        build_model(_cfg(TINY, opts=["MODEL.MASK_FORMER.TEST.INSTANCE_ON", "True", "TEST.MODE", "slide"]))


# ------------------------------------------------------------------ training on the synthetic data
TASKS = {
    "semantic": ([], "synthetic_sem_seg_train", "synthetic_sem_seg_val", ("sem_seg", "mIoU")),
    "instance": (["DATASET_MAPPER_NAME:mask_former_instance", "NUM_CLASSES:4", "SEMANTIC_ON:False", "INSTANCE_ON:True"],
                 "synthetic_instances_train", "synthetic_instances_val", ("segm", "AP")),
    "panoptic": (["DATASET_MAPPER_NAME:mask_former_panoptic", "PANOPTIC_ON:True", "INSTANCE_ON:True"],
                 "synthetic_panoptic_train", "synthetic_panoptic_val", ("panoptic_seg", "PQ")),
}
_KEYS = {"DATASET_MAPPER_NAME": "INPUT.DATASET_MAPPER_NAME", "NUM_CLASSES": "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
         "SEMANTIC_ON": "MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "INSTANCE_ON": "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
         "PANOPTIC_ON": "MODEL.MASK_FORMER.TEST.PANOPTIC_ON"}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_training_reduces_loss_and_task_evaluator_reports(task, synthetic_root):
    """Twenty AdamW steps on a fixed batch of the task's synthetic data (through its mapper) lower the loss measured
    with the same random draws; then the dataset's evaluator (mIoU / COCO mask AP / PQ) reports on 4 validation
    images."""
    overrides, train, val, (group, metric) = TASKS[task]
    opts = [x for o in overrides for x in (_KEYS[o.split(":")[0]], o.split(":")[1])]
    cfg = _cfg(TINY, opts=opts + ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{val}',)"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    mapper = build_mapper(cfg, True)
    batch = [x for x in map(mapper, get_dataset_dicts([train])[:12]) if len(x["instances"])][:4]  # crops may miss
    assert len(batch) == 4

    def loss():
        torch.manual_seed(1)
        return sum(model(batch).values())

    with torch.no_grad():
        before = loss().item()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.7 * before, (before, after)

    model.eval()
    evaluator = build_evaluator(cfg, val)
    test_mapper = build_mapper(cfg, False)
    inputs = [test_mapper(r) for r in get_dataset_dicts([val])[:4]]
    evaluator.reset()
    with torch.no_grad():
        evaluator.process(inputs, model(inputs))
    results = evaluator.evaluate()
    assert math.isfinite(results[group][metric]), results
    if task == "panoptic":
        assert math.isfinite(results["sem_seg"]["mIoU"])  # the panoptic dataset's semantic labels are evaluated too


@pytest.mark.slow
def test_semantic_demo_beats_chance(tmp_path, synthetic_root):
    """The semantic demo config (DAT++ nano + the nano Mask2Former head, 600 iterations from scratch) reaches a
    validation mIoU far above chance (uniform guessing: 6.7; the majority class everywhere: 7.1)."""
    from dense.engine import Trainer

    cfg = _cfg("configs/synthetic/mask2former/dat_pp_nano_semantic_demo.yaml",
               opts=["OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0"])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    assert trainer.train()["sem_seg"]["mIoU"] > 40


# ------------------------------------------------------------------ configs and parameter counts
M2F_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "mask2former", "*.yaml"), recursive=True)
                     if not os.path.basename(p).startswith("Base-"))


def _build_on_meta(cfg):
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).from_config(cfg)


@pytest.mark.parametrize("path", M2F_CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_mask2former_config_builds(path):
    """Every Mask2Former config builds its whole model (on the meta device: no memory) with the head it names."""
    cfg = _cfg(path)
    model = _build_on_meta(cfg)
    assert model.sem_seg_head.num_classes == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert model.sem_seg_head.num_queries == cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES


def _segments_batch(num_classes, size=(96, 96), n=2, seed=0):
    """Images with a random label map, one mask per present class (what the mask_former_semantic mapper builds)."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        label = torch.randint(0, 3, (size[0] // 16, size[1] // 16),
                              generator=g).repeat_interleave(16, 0).repeat_interleave(16, 1)
        classes = torch.randperm(num_classes, generator=g)[:3]
        inst = Instances(size)
        inst.gt_classes = classes[label.unique()]
        inst.gt_masks = torch.stack([label == v for v in label.unique()])
        batch.append({"image": torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8), "instances": inst})
    return batch


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if "large" in p or "base" in p else p
                                  for p in M2F_CONFIGS],
                         ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_every_mask2former_config_trains_a_step_and_infers(path):
    """Every Mask2Former config (the BEiT-B/L ones only in the slow run) runs forward + backward on a small batch of
    segments, with gradient reaching the backbone, and infers every task its config turns on."""
    cfg = _cfg(path)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model(_segments_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.zeros(3, 70, 90, dtype=torch.uint8), "height": 35, "width": 45}])[0]
    t = cfg.MODEL.MASK_FORMER.TEST
    assert ("sem_seg" in out) == t.SEMANTIC_ON and ("panoptic_seg" in out) == t.PANOPTIC_ON
    assert ("instances" in out) == t.INSTANCE_ON
    if t.SEMANTIC_ON:
        assert out["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 35, 45)


@pytest.mark.parametrize("config,paper_m", [
    ("ade20k/mask2former/vit_adapter_large_beit_640_160k", 568),
    ("ade20k/mask2former/vit_adapter_large_beit_896_80k", 571),
    ("coco_stuff10k/mask2former/vit_adapter_base_beit_512_40k", 120)])
def test_whole_model_param_counts(config, paper_m):
    """ViT-Adapter's tables: ViT-Adapter-L + Mask2Former 568M (640, ADE20K) and 571M (896, ADE20K; 200 queries),
    ViT-Adapter-B + Mask2Former 120M (COCO-Stuff-10k), within 0.5M (the tables round to millions)."""
    model = _build_on_meta(_cfg(f"configs/{config}.yaml"))
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - paper_m) < 0.5


def test_r50_param_count_equals_detectron2():
    """R50 + Mask2Former for ADE20K has exactly the parameters of Detectron2 Mask2Former's own build of
    maskformer2_R50_bs16_160k (43,988,247; shared/research/framework.md), i.e. the same head, layer for layer."""
    model = _build_on_meta(_cfg("configs/ade20k/mask2former/r50_160k.yaml"))
    assert sum(p.numel() for p in model.parameters()) == 43_988_247


# ------------------------------------------------------------------ released checkpoints
def _mmseg_head_keys(model) -> dict[str, tuple]:
    """The released ViT-Adapter Mask2Former head's state-dict keys, written out from upstream's module structure
    (mmseg_custom Mask2FormerHead + MSDeformAttnPixelDecoder, mmcv BaseTransformerLayer / FFN / MultiheadAttention),
    with the shapes this config implies."""
    head = model.sem_seg_head
    c, m, q, k = 256, 256, head.num_queries, head.num_classes + 1
    heads, levels, points, enc_ffn, dec_ffn = 8, 3, 4, 1024, 2048
    keys = {}
    for i in range(3):
        keys.update({f"pixel_decoder.input_convs.{i}.conv.weight": (c, 768, 1, 1),
                     f"pixel_decoder.input_convs.{i}.conv.bias": (c,),
                     f"pixel_decoder.input_convs.{i}.gn.weight": (c,), f"pixel_decoder.input_convs.{i}.gn.bias": (c,)})
    for i in range(6):
        p = f"pixel_decoder.encoder.layers.{i}."
        for name, shape in {"attentions.0.sampling_offsets": (heads * levels * points * 2, c),
                            "attentions.0.attention_weights": (heads * levels * points, c),
                            "attentions.0.value_proj": (c, c), "attentions.0.output_proj": (c, c),
                            "ffns.0.layers.0.0": (enc_ffn, c), "ffns.0.layers.1": (c, enc_ffn)}.items():
            keys.update({p + name + ".weight": shape, p + name + ".bias": shape[:1]})
        for j in range(2):
            keys.update({p + f"norms.{j}.weight": (c,), p + f"norms.{j}.bias": (c,)})
    keys.update({"pixel_decoder.level_encoding.weight": (levels, c),
                 "pixel_decoder.lateral_convs.0.conv.weight": (c, 768, 1, 1),
                 "pixel_decoder.lateral_convs.0.gn.weight": (c,), "pixel_decoder.lateral_convs.0.gn.bias": (c,),
                 "pixel_decoder.output_convs.0.conv.weight": (c, c, 3, 3),
                 "pixel_decoder.output_convs.0.gn.weight": (c,),
                 "pixel_decoder.output_convs.0.gn.bias": (c,), "pixel_decoder.mask_feature.weight": (m, c, 1, 1),
                 "pixel_decoder.mask_feature.bias": (m,)})
    for i in range(9):
        p = f"transformer_decoder.layers.{i}."
        for a in range(2):
            keys.update({p + f"attentions.{a}.attn.in_proj_weight": (3 * c, c),
                         p + f"attentions.{a}.attn.in_proj_bias": (3 * c,),
                         p + f"attentions.{a}.attn.out_proj.weight": (c, c),
                         p + f"attentions.{a}.attn.out_proj.bias": (c,)})
        keys.update({p + "ffns.0.layers.0.0.weight": (dec_ffn, c), p + "ffns.0.layers.0.0.bias": (dec_ffn,),
                     p + "ffns.0.layers.1.weight": (c, dec_ffn), p + "ffns.0.layers.1.bias": (c,)})
        for j in range(3):
            keys.update({p + f"norms.{j}.weight": (c,), p + f"norms.{j}.bias": (c,)})
    keys.update({"transformer_decoder.post_norm.weight": (c,), "transformer_decoder.post_norm.bias": (c,),
                 "query_embed.weight": (q, c), "query_feat.weight": (q, c), "level_embed.weight": (levels, c),
                 "cls_embed.weight": (k, c), "cls_embed.bias": (k,)})
    for j, (o, i) in enumerate([(c, c), (c, c), (m, c)]):
        keys.update({f"mask_embed.{2 * j}.weight": (o, i), f"mask_embed.{2 * j}.bias": (o,)})
    return keys


@pytest.mark.parametrize("head_prefix", ["decode_head.", "panoptic_head."])
def test_released_vit_adapter_mask2former_zip_loads(tmp_path, head_prefix):
    """A stand-in mask2former_beit_adapter_base_512_40k_cocostuff10k release (mmseg layout: state_dict with
    backbone.* and decode_head.*, meta; shipped as a .zip) loads through MODEL.WEIGHTS' path with nothing missing or
    unexpected (dropped by design: BEiT's index buffers and the unused mmseg classifier conv_seg that early releases
    carry), and every tensor lands where the key says; so does the mmdet layout (panoptic_head.*)."""
    cfg = _cfg("configs/coco_stuff10k/mask2former/vit_adapter_base_beit_512_40k.yaml")
    model = build_model(cfg)
    with open(shared_file("keys", "vit_adapter_keys.json")) as f:
        backbone = {k: (tuple(shape), dtype) for k, (shape, dtype) in
                    json.load(f)["dense"]["beit_adapter_base_512"]["keys"].items()}
    g = torch.Generator().manual_seed(0)
    sd = {"backbone." + k: torch.zeros(s, dtype=torch.int64) if "int" in dtype else torch.randn(s, generator=g)
          for k, (s, dtype) in backbone.items()}
    sd.update({head_prefix + k: torch.randn(s, generator=g) for k, s in _mmseg_head_keys(model).items()})
    if head_prefix == "decode_head.":  # releases saved before upstream set conv_seg = None keep mmseg's classifier
        sd.update({"decode_head.conv_seg.weight": torch.randn(171, 256, 1, 1),
                   "decode_head.conv_seg.bias": torch.randn(171)})
    pth = tmp_path / "mask2former_beit_adapter_base_512_40k_cocostuff10k.pth"
    torch.save({"state_dict": sd, "meta": {"mmcv_version": "1.4.2"}}, pth)
    with zipfile.ZipFile(tmp_path / "release.zip", "w") as z:
        z.write(pth, pth.name)
    ck = DenseCheckpointer(model)
    ck.load(str(tmp_path / "release.zip"))
    r = ck.last_report
    assert not r.missing and not r.unexpected and not r.mismatched, r.summary()
    assert set(r.dropped) <= {k for k in sd if k.endswith("relative_position_index") or "conv_seg" in k}, r.summary()
    assert ("decode_head.conv_seg.weight" in r.dropped) == (head_prefix == "decode_head.")
    own = model.state_dict()
    for key in _mmseg_head_keys(model):
        torch.testing.assert_close(own["sem_seg_head." + key], sd[head_prefix + key])


def _to_detectron2(key: str) -> str:
    """dense (torchvision ResNet + mmseg head) key -> Detectron2 Mask2Former's, written out independently."""
    import re

    rules = [(r"^backbone\.conv1\.", "backbone.stem.conv1."), (r"^backbone\.bn1\.", "backbone.stem.conv1.norm."),
             (r"^backbone\.layer(\d)\.(\d+)\.bn(\d)\.",
              lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm."),
             (r"^backbone\.layer(\d)\.(\d+)\.conv(\d)\.", lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}."),
             (r"^backbone\.layer(\d)\.(\d+)\.downsample\.0\.",
              lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.shortcut."),
             (r"^backbone\.layer(\d)\.(\d+)\.downsample\.1\.",
              lambda m: f"backbone.res{int(m[1]) + 1}.{m[2]}.shortcut.norm."),
             (r"pixel_decoder\.input_convs\.(\d)\.conv\.", r"pixel_decoder.input_proj.\1.0."),
             (r"pixel_decoder\.input_convs\.(\d)\.gn\.", r"pixel_decoder.input_proj.\1.1."),
             (r"pixel_decoder\.level_encoding\.weight", "pixel_decoder.transformer.level_embed"),
             (r"pixel_decoder\.encoder\.layers\.(\d)\.attentions\.0\.",
              r"pixel_decoder.transformer.encoder.layers.\1.self_attn."),
             (r"pixel_decoder\.encoder\.layers\.(\d)\.norms\.(\d)\.",
              lambda m: f"pixel_decoder.transformer.encoder.layers.{m[1]}.norm{int(m[2]) + 1}."),
             (r"pixel_decoder\.encoder\.layers\.(\d)\.ffns\.0\.layers\.0\.0\.",
              r"pixel_decoder.transformer.encoder.layers.\1.linear1."),
             (r"pixel_decoder\.encoder\.layers\.(\d)\.ffns\.0\.layers\.1\.",
              r"pixel_decoder.transformer.encoder.layers.\1.linear2."),
             (r"pixel_decoder\.lateral_convs\.0\.conv\.", "pixel_decoder.adapter_1."),
             (r"pixel_decoder\.lateral_convs\.0\.gn\.", "pixel_decoder.adapter_1.norm."),
             (r"pixel_decoder\.output_convs\.0\.conv\.", "pixel_decoder.layer_1."),
             (r"pixel_decoder\.output_convs\.0\.gn\.", "pixel_decoder.layer_1.norm."),
             (r"pixel_decoder\.mask_feature\.", "pixel_decoder.mask_features."),
             (r"transformer_decoder\.layers\.(\d)\.attentions\.0\.attn\.",
              r"predictor.transformer_cross_attention_layers.\1.multihead_attn."),
             (r"transformer_decoder\.layers\.(\d)\.attentions\.1\.attn\.",
              r"predictor.transformer_self_attention_layers.\1.self_attn."),
             (r"transformer_decoder\.layers\.(\d)\.norms\.0\.",
              r"predictor.transformer_cross_attention_layers.\1.norm."),
             (r"transformer_decoder\.layers\.(\d)\.norms\.1\.",
              r"predictor.transformer_self_attention_layers.\1.norm."),
             (r"transformer_decoder\.layers\.(\d)\.norms\.2\.", r"predictor.transformer_ffn_layers.\1.norm."),
             (r"transformer_decoder\.layers\.(\d)\.ffns\.0\.layers\.0\.0\.",
              r"predictor.transformer_ffn_layers.\1.linear1."),
             (r"transformer_decoder\.layers\.(\d)\.ffns\.0\.layers\.1\.",
              r"predictor.transformer_ffn_layers.\1.linear2."),
             (r"transformer_decoder\.post_norm\.", "predictor.decoder_norm."),
             (r"sem_seg_head\.(query_feat|query_embed|level_embed)\.", r"sem_seg_head.predictor.\1."),
             (r"sem_seg_head\.cls_embed\.", "sem_seg_head.predictor.class_embed."),
             (r"sem_seg_head\.mask_embed\.(\d)\.",
              lambda m: f"sem_seg_head.predictor.mask_embed.layers.{int(m[1]) // 2}.")]
    for pattern, repl in rules:
        key, n = re.subn(pattern, repl, key)
        if n:
            return key
    raise AssertionError(f"no Detectron2 name for {key}")


def test_detectron2_release_loads(tmp_path):
    """A model saved in Detectron2 Mask2Former's layout (.pkl of numpy arrays: ResNet stem/res2..5/shortcut,
    pixel_decoder.input_proj/transformer/adapter_1/layer_1, predictor.*, criterion.empty_weight) loads completely
    and gives the original model's outputs."""
    cfg = _cfg(TINY, opts=["MODEL.RESNETS.NORM", "FrozenBN"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    sd = {_to_detectron2(k): v.numpy() for k, v in model.state_dict().items()}
    sd["criterion.empty_weight"] = np.ones(7, np.float32)
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": sd, "__author__": "stand-in"}, f)
    torch.manual_seed(1)
    other = build_model(cfg).eval()
    ck = DenseCheckpointer(other)
    ck.load(str(tmp_path / "model_final.pkl"))
    r = ck.last_report
    assert not r.missing and not r.unexpected and list(r.dropped) == ["criterion.empty_weight"], r.summary()
    image = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)}]
    with torch.no_grad():
        torch.testing.assert_close(other(image)[0]["sem_seg"], model(image)[0]["sem_seg"])


def test_mappers_build_one_mask_per_segment(synthetic_root):
    """mask_former_semantic: one mask per class present (ignore excluded) that tiles the labelled pixels;
    mask_former_panoptic: one mask per non-crowd segment with its contiguous class; LSJ output is exactly
    IMAGE_SIZE square."""
    cfg = _cfg(TINY)
    rec = get_dataset_dicts(["synthetic_sem_seg_train"])[0]
    out = build_mapper(cfg, True)(rec)
    inst, sem = out["instances"], out["sem_seg"]
    assert inst.gt_classes.tolist() == sorted(set(sem[sem != 255].tolist()))
    assert torch.equal(inst.gt_masks.sum(0).bool(), sem != 255) and inst.gt_masks.sum(0).max() == 1
    rec = get_dataset_dicts(["synthetic_panoptic_train"])[0]
    cfg = _cfg(TINY, opts=["INPUT.DATASET_MAPPER_NAME", "mask_former_panoptic", "INPUT.CROP.ENABLED", "False",
                           "INPUT.FLIP_PROB", "0.0", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
                           "INPUT.MAX_SIZE_TRAIN", "0",
                           "INPUT.MIN_SIZE_TRAIN", f"({min(rec['height'], rec['width'])},)"])  # no resize, crop, flip
    out = build_mapper(cfg, True)(rec)
    segments = [s for s in rec["segments_info"] if not s["iscrowd"]]
    assert out["instances"].gt_classes.tolist() == [s["category_id"] for s in segments]
    assert out["instances"].gt_masks.sum((1, 2)).tolist() == [s["area"] for s in segments]
    cfg = _cfg(TINY, opts=["INPUT.DATASET_MAPPER_NAME", "coco_panoptic_lsj", "INPUT.IMAGE_SIZE", "96"])
    out = build_mapper(cfg, True)(rec)
    assert out["image"].shape[-2:] == (96, 96) and out["instances"].gt_masks.shape[-2:] == (96, 96)
    assert isinstance(out["instances"], Instances)


def test_panoptic_drawing_and_demo_tool(synthetic_root, tmp_path):
    """draw_panoptic blends every segment in its class colour (instances of a thing class in distinct shades), with
    a legend counting segments per class; tools/demo.py draws a panoptic model's output that way."""
    from dense.utils.visualizer import draw_panoptic, palette

    image = np.zeros((40, 60, 3), np.uint8)
    ids = np.zeros((40, 60), np.int32)
    ids[:, :30], ids[5:15, 35:45], ids[20:30, 35:45] = 1, 2, 3
    info = [{"id": 1, "category_id": 0, "isthing": False}, {"id": 2, "category_id": 2, "isthing": True},
            {"id": 3, "category_id": 2, "isthing": True}]
    vis = draw_panoptic(image, ids, info, ["sky", "road", "car"])
    assert vis.shape[0] >= 40 and vis.shape[1] > 60  # legend on the right
    drawn = vis[:40, :60].astype(int)
    assert (drawn[20, 10] > 0).any() and (drawn[38, 55] == 0).all()  # a segment is coloured, void is not
    assert not np.array_equal(drawn[8, 40], drawn[23, 40])  # two instances of one class: two shades
    def hue(rgb):
        return cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0, 0]
    assert abs(int(hue(drawn[10, 38])) - int(hue(palette(3)[2]))) <= 2  # in the class's hue

    cfg = os.path.join(REPO, "tests", "configs", "tiny_mask2former.yaml")
    src = os.path.join(synthetic_root, "images", "val", "00000.jpg")
    run_tool([PY, "tools/demo.py", "--config-file", cfg, "--input", src, "--output", str(tmp_path), "--opts",
              "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True", "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
              "DATASETS.TEST", "('synthetic_panoptic_val',)"])
    out = cv2.imread(str(tmp_path / "00000.png"))
    assert out.shape[0] >= cv2.imread(src).shape[0] and out.shape[1] > cv2.imread(src).shape[1]
