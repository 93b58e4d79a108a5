"""Region proposal network as mmdetection 2.x's ``RPNHead`` (key names ``rpn_conv``, ``rpn_cls``, ``rpn_reg``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import box_iou, clip_boxes_to_image

from ..backbone.backbone import ShapeSpec
from ..detection.nms import batched_nms
from ..detection import AnchorGenerator, BoxCoder, MaxIoUMatcher, box_regression_loss, build_anchor_generator
from ..layers import shared_channels

__all__ = ["RPNHead"]


class RPNHead(nn.Module):
    """Proposals from FPN levels (mmdet 2.x RPNHead + its train/test cfg).

    Per level: 3x3 ``rpn_conv`` + ReLU (shared over levels), 1x1 ``rpn_cls`` -> A objectness logits and 1x1
    ``rpn_reg`` -> 4A deltas per location.

    Training: anchors are matched to the ground truth (``matcher``), ``batch_size_per_image`` of them sampled at
    ``positive_fraction`` (torchvision's sampler = mmdet's RandomSampler); ``loss_rpn_cls`` is the binary
    cross-entropy over the sampled anchors and ``loss_rpn_bbox`` the L1 / smooth-L1 of the positive deltas, both
    summed over the batch and divided by the number of sampled anchors.
    Proposals (no gradient): per level the ``pre_nms_topk`` best, decoded and clipped to the image, small boxes
    dropped by ``min_size_rule``, NMS within each level at ``nms_thresh``, the ``post_nms_topk`` best kept.
    ``min_size_rule`` (mmdet changed it in 2.18): "strict" drops boxes with a side <= ``min_size``, also at 0 (zero
    width or height; mmdet >= 2.18); "inclusive" drops boxes with a side < ``min_size`` only when it is > 0, keeping
    zero-size boxes at 0 (mmdet < 2.18, e.g. the 2.11 of DaViT's released detectors).
    """

    def __init__(self, *, in_features: list[str], in_channels: int, anchor_generator: AnchorGenerator,
                 matcher: MaxIoUMatcher, box_coder: BoxCoder, batch_size_per_image: int = 256,
                 positive_fraction: float = 0.5, smooth_l1_beta: float = 0.0,
                 pre_nms_topk: tuple[int, int] = (2000, 1000), post_nms_topk: tuple[int, int] = (1000, 1000),
                 nms_thresh: float = 0.7, min_size: float = 0.0, min_size_rule: str = "strict"):
        super().__init__()
        if min_size_rule not in ("strict", "inclusive"):
            raise ValueError(f"MODEL.RPN.MIN_SIZE_RULE must be 'strict' (mmdet >= 2.18) or 'inclusive' (mmdet < 2.18), "
                             f"got '{min_size_rule}'")
        self.min_size_rule = min_size_rule
        num_anchors = anchor_generator.num_anchors
        self.rpn_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(in_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):  # mmdet RPNHead init_cfg: Normal(std=0.01)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.in_features = list(in_features)
        self.anchor_generator, self.matcher, self.box_coder = anchor_generator, matcher, box_coder
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.smooth_l1_beta = smooth_l1_beta
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh, self.min_size = nms_thresh, min_size

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> RPNHead:
        r = cfg.MODEL.RPN
        channels = shared_channels(input_shape, r.IN_FEATURES, "MODEL.RPN.IN_FEATURES")
        strides = [input_shape[f].stride for f in r.IN_FEATURES]
        return cls(in_features=r.IN_FEATURES, in_channels=channels,
                   anchor_generator=build_anchor_generator(cfg, strides),
                   matcher=MaxIoUMatcher(*r.IOU_THRESHOLDS, min_pos_iou=r.MIN_POS_IOU),
                   box_coder=BoxCoder(tuple(r.BBOX_REG_WEIGHTS)), batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
                   positive_fraction=r.POSITIVE_FRACTION, smooth_l1_beta=r.SMOOTH_L1_BETA,
                   pre_nms_topk=(r.PRE_NMS_TOPK_TRAIN, r.PRE_NMS_TOPK_TEST),
                   post_nms_topk=(r.POST_NMS_TOPK_TRAIN, r.POST_NMS_TOPK_TEST), nms_thresh=r.NMS_THRESH,
                   min_size=r.MIN_SIZE, min_size_rule=r.MIN_SIZE_RULE)

    def forward(self, features: dict[str, torch.Tensor], image_sizes: list[tuple[int, int]],
                gt_boxes: list[torch.Tensor] | None = None, padded_sizes: list[tuple[int, int]] | None = None
                ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Returns (proposals: per image [P_i, 4] XYXY, detached; losses, empty outside training).

        Training needs ``gt_boxes`` (per image [G_i, 4]) and ``padded_sizes`` (each image padded on its own to the
        size divisibility): anchors beyond that are left out of its targets (mmdet valid flags)."""
        maps = [features[f] for f in self.in_features]
        logits, deltas = [], []
        for x in maps:
            t = F.relu(self.rpn_conv(x))
            n, _, h, w = x.shape
            logits.append(self.rpn_cls(t).permute(0, 2, 3, 1).reshape(n, -1))  # [N, H*W*A]
            deltas.append(self.rpn_reg(t).view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        grid = [m.shape[-2:] for m in maps]
        anchors = self.anchor_generator(grid)
        losses = {}
        if self.training:
            if gt_boxes is None or padded_sizes is None:
                raise ValueError("RPNHead needs gt_boxes and padded_sizes in training")
            valid = [self.anchor_generator.valid(grid, size) for size in padded_sizes]
            losses = self.losses(torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1), gt_boxes, valid)
        return self.proposals(anchors, logits, deltas, image_sizes), losses

    def losses(self, anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, gt_boxes: list[torch.Tensor],
               valid: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """anchors [A, 4], logits [N, A], deltas [N, A, 4], gt_boxes N x [G_i, 4], valid N x bool [A]."""
        labels, targets = [], []
        for gt, ok in zip(gt_boxes, valid):
            iou = box_iou(gt, anchors) if len(gt) else anchors.new_zeros((0, len(anchors)))
            matched, label = self.matcher(iou, ok)
            labels.append(label)
            targets.append(gt[matched] if len(gt) else torch.zeros_like(anchors))
        pos, neg = self.sampler(labels)
        pos, neg = torch.stack(pos).bool(), torch.stack(neg).bool()  # [N, A]
        sampled = pos | neg
        normalizer = max(int(sampled.sum()), 1)
        loss_cls = F.binary_cross_entropy_with_logits(logits[sampled].float(), pos[sampled].float(), reduction="sum")
        box_targets = self.box_coder.encode_single(torch.stack(targets)[pos], anchors[None].expand_as(deltas)[pos])
        loss_bbox = box_regression_loss(deltas[pos].float(), box_targets, self.smooth_l1_beta)
        return {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_bbox": loss_bbox / normalizer}

    @torch.no_grad()
    def proposals(self, anchors: list[torch.Tensor], logits: list[torch.Tensor], deltas: list[torch.Tensor],
                  image_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Per image [P, 4]: the post-NMS proposals, best first."""
        pre, post = self.pre_nms_topk[self.training], self.post_nms_topk[self.training]
        out = []
        for i, size in enumerate(image_sizes):
            boxes, scores, levels = [], [], []
            for lvl, (a, lg, d) in enumerate(zip(anchors, logits, deltas)):
                s = lg[i].detach().float()
                n = s.shape[0]  # symbolic while tracing: sym_min keeps it so (min() would fix it to the traced size)
                top = s.topk(torch.sym_min(pre, n)).indices if pre > 0 else torch.arange(n, device=s.device)
                boxes.append(self.box_coder.decode_single(d[i, top].detach().float(), a[top]))
                scores.append(s[top].sigmoid())
                levels.append(torch.full((top.shape[0],), lvl, device=s.device))
            boxes = clip_boxes_to_image(torch.cat(boxes), size)
            scores, levels = torch.cat(scores), torch.cat(levels)
            wh = boxes[:, 2:] - boxes[:, :2]
            if self.min_size_rule == "strict":
                valid = (wh > self.min_size).all(dim=1)
                boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
            elif self.min_size > 0:
                valid = (wh >= self.min_size).all(dim=1)
                boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
            keep = batched_nms(boxes, scores, levels, self.nms_thresh)[:post]
            out.append(boxes[keep])
        return out
