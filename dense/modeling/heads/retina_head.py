"""RetinaNet's head as mmdetection 2.x's ``RetinaHead`` (key names ``cls_convs``, ``reg_convs``, ``retina_cls``,
``retina_reg``)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou, clip_boxes_to_image, sigmoid_focal_loss

from ...structures import Instances
from ..backbone.backbone import ShapeSpec
from ..detection.nms import batched_nms
from ..detection import AnchorGenerator, BoxCoder, MaxIoUMatcher, box_regression_loss, build_anchor_generator
from ..layers import ConvNormAct, shared_channels

__all__ = ["RetinaHead"]


class RetinaHead(nn.Module):
    """Dense classification and box regression on FPN levels (Lin et al. 2017, mmdet 2.x RetinaHead + its cfg).

    Per level, shared over levels: ``num_convs`` 3x3 conv + ReLU towers (``cls_convs.i.conv``, ``reg_convs.i.conv``),
    a 3x3 ``retina_cls`` -> A x K logits and a 3x3 ``retina_reg`` -> 4A deltas per location.

    Training: every anchor is matched (``matcher``, no sampling); ``loss_cls`` is the sigmoid focal loss over all
    non-ignored anchors and classes, ``loss_bbox`` the L1 / smooth-L1 of the positives' deltas; both are summed
    over the batch and divided by the number of positives, counting at least one per image (mmdet).
    Inference, per image: per level the (anchor, class) pairs scoring above ``score_thresh``, at most
    ``topk_candidates`` of them (``candidate_rule`` "pairs": the best pairs, mmdet >= 2.18; "anchors": the pairs of
    the ``topk_candidates`` anchors with the best top-class score, mmdet < 2.18), decoded and clipped; class-wise NMS
    at ``nms_thresh``; the ``detections_per_image`` best.
    Init as mmdet: N(0, 0.01) conv weights, zero biases, ``retina_cls`` bias -log((1 - p) / p) for ``prior_prob`` p.
    """

    def __init__(self, *, in_features: list[str], in_channels: int, num_classes: int, anchor_generator: AnchorGenerator,
                 matcher: MaxIoUMatcher, box_coder: BoxCoder, num_convs: int = 4, prior_prob: float = 0.01,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, smooth_l1_beta: float = 0.0,
                 score_thresh: float = 0.05, topk_candidates: int = 1000, candidate_rule: str = "pairs",
                 nms_thresh: float = 0.5, detections_per_image: int = 100):
        super().__init__()
        a = anchor_generator.num_anchors
        self.cls_convs = nn.ModuleList(ConvNormAct(in_channels, in_channels, 3, padding=1) for _ in range(num_convs))
        self.reg_convs = nn.ModuleList(ConvNormAct(in_channels, in_channels, 3, padding=1) for _ in range(num_convs))
        self.retina_cls = nn.Conv2d(in_channels, a * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(in_channels, a * 4, 3, padding=1)
        for conv in [*(c.conv for c in self.cls_convs), *(c.conv for c in self.reg_convs), self.retina_cls,
                     self.retina_reg]:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        self.in_features, self.num_classes = list(in_features), num_classes
        self.anchor_generator, self.matcher, self.box_coder = anchor_generator, matcher, box_coder
        self.focal_alpha, self.focal_gamma, self.smooth_l1_beta = focal_alpha, focal_gamma, smooth_l1_beta
        if candidate_rule not in ("pairs", "anchors"):
            raise ValueError(f"MODEL.RETINANET.CANDIDATE_RULE must be 'pairs' (mmdet >= 2.18) or 'anchors' "
                             f"(mmdet < 2.18), got '{candidate_rule}'")
        self.score_thresh, self.topk_candidates, self.candidate_rule = score_thresh, topk_candidates, candidate_rule
        self.nms_thresh, self.detections_per_image = nms_thresh, detections_per_image

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> RetinaHead:
        r = cfg.MODEL.RETINANET
        channels = shared_channels(input_shape, r.IN_FEATURES, "MODEL.RETINANET.IN_FEATURES")
        strides = [input_shape[f].stride for f in r.IN_FEATURES]
        return cls(in_features=r.IN_FEATURES, in_channels=channels, num_classes=r.NUM_CLASSES,
                   anchor_generator=build_anchor_generator(cfg, strides),
                   matcher=MaxIoUMatcher(*r.IOU_THRESHOLDS, min_pos_iou=r.MIN_POS_IOU),
                   box_coder=BoxCoder(tuple(r.BBOX_REG_WEIGHTS)), num_convs=r.NUM_CONVS, prior_prob=r.PRIOR_PROB,
                   focal_alpha=r.FOCAL_LOSS_ALPHA, focal_gamma=r.FOCAL_LOSS_GAMMA, smooth_l1_beta=r.SMOOTH_L1_LOSS_BETA,
                   score_thresh=r.SCORE_THRESH_TEST, topk_candidates=r.TOPK_CANDIDATES_TEST,
                   candidate_rule=r.CANDIDATE_RULE, nms_thresh=r.NMS_THRESH_TEST,
                   detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)

    def forward(self, features: dict[str, torch.Tensor], image_sizes: list[tuple[int, int]],
                gt_instances: list[Instances] | None = None, padded_sizes: list[tuple[int, int]] | None = None
                ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """Returns (per-image detections at the input size, empty in training; losses, empty outside training).
        Training needs ``gt_instances`` (gt_boxes, gt_classes per image) and ``padded_sizes`` (as RPNHead's)."""
        maps = [features[f] for f in self.in_features]
        logits, deltas = [], []
        for x in maps:
            n, _, h, w = x.shape
            c, r = x, x
            for conv in self.cls_convs:
                c = conv(c)
            for conv in self.reg_convs:
                r = conv(r)
            logits.append(self.retina_cls(c).view(n, -1, self.num_classes, h, w).permute(0, 3, 4, 1, 2)
                          .reshape(n, -1, self.num_classes))  # [N, H*W*A, K]
            deltas.append(self.retina_reg(r).view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        grid = [m.shape[-2:] for m in maps]
        anchors = self.anchor_generator(grid)
        if self.training:
            if gt_instances is None or padded_sizes is None:
                raise ValueError("RetinaHead needs gt_instances and padded_sizes in training")
            valid = [self.anchor_generator.valid(grid, size) for size in padded_sizes]
            return [], self.losses(torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1), gt_instances, valid)
        return self.detect(anchors, logits, deltas, image_sizes), {}

    def losses(self, anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor,
               gt_instances: list[Instances], valid: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """anchors [A, 4], logits [N, A, K], deltas [N, A, 4], valid N x bool [A]."""
        labels, classes, targets = [], [], []
        for t, ok in zip(gt_instances, valid):
            gt = t.gt_boxes
            iou = box_iou(gt, anchors) if len(gt) else anchors.new_zeros((0, len(anchors)))
            matched, label = self.matcher(iou, ok)
            labels.append(label)
            classes.append(t.gt_classes[matched] if len(gt) else matched)
            targets.append(gt[matched] if len(gt) else torch.zeros_like(anchors))
        labels, classes = torch.stack(labels), torch.stack(classes)  # [N, A]
        pos, valid = labels == 1, labels >= 0
        normalizer = float(sum(max(int(p.sum()), 1) for p in pos))
        onehot = torch.zeros_like(logits, dtype=torch.float32)
        onehot[pos] = F.one_hot(classes[pos], self.num_classes).float()
        loss_cls = sigmoid_focal_loss(logits[valid].float(), onehot[valid], self.focal_alpha, self.focal_gamma, "sum")
        box_targets = self.box_coder.encode_single(torch.stack(targets)[pos], anchors[None].expand_as(deltas)[pos])
        loss_bbox = box_regression_loss(deltas[pos].float(), box_targets, self.smooth_l1_beta)
        return {"loss_cls": loss_cls / normalizer, "loss_bbox": loss_bbox / normalizer}

    @torch.no_grad()
    def detect(self, anchors: list[torch.Tensor], logits: list[torch.Tensor], deltas: list[torch.Tensor],
               image_sizes: list[tuple[int, int]]) -> list[Instances]:
        results = []
        for i, size in enumerate(image_sizes):
            boxes, scores, classes = [], [], []
            for a, lg, d in zip(anchors, logits, deltas):
                s = lg[i].float().sigmoid()  # [A_l, K]
                if self.candidate_rule == "anchors" and s.shape[0] > self.topk_candidates:
                    anchors_kept = s.max(1).values.topk(self.topk_candidates).indices
                    idx = torch.nonzero(s[anchors_kept] > self.score_thresh)
                    idx[:, 0] = anchors_kept[idx[:, 0]]
                    scores.append(s[idx[:, 0], idx[:, 1]])
                else:
                    idx = torch.nonzero(s > self.score_thresh)
                    top = s[idx[:, 0], idx[:, 1]].sort(descending=True)
                    idx = idx[top.indices[: self.topk_candidates]]
                    scores.append(top.values[: self.topk_candidates])
                classes.append(idx[:, 1])
                boxes.append(self.box_coder.decode_single(d[i, idx[:, 0]].float(), a[idx[:, 0]]))
            boxes = clip_boxes_to_image(torch.cat(boxes), size)
            scores, classes = torch.cat(scores), torch.cat(classes)
            keep = batched_nms(boxes, scores, classes, self.nms_thresh)[: self.detections_per_image]
            results.append(Instances(size, pred_boxes=boxes[keep], scores=scores[keep], pred_classes=classes[keep]))
        return results
