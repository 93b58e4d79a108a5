"""The R-CNN second stage as mmdetection 2.x's ``StandardRoIHead``: box branch + optional mask branch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import box_iou, clip_boxes_to_image

from ...structures import Instances, crop_and_resize
from ..backbone.backbone import ShapeSpec
from ..detection.nms import batched_nms
from ..detection import BoxCoder, MaxIoUMatcher, ROIPooler, box_regression_loss
from ..layers import shared_channels
from .box_head import FCBBoxHead
from .mask_head import FCNMaskHead

__all__ = ["StandardROIHeads"]


class StandardROIHeads(nn.Module):
    """Box (``bbox_head``) and mask (``mask_head``) branches on RoIs pooled from FPN levels.

    Training, per image: the ground-truth boxes are prepended to the proposals (``proposal_append_gt``), matched
    (``matcher``) and ``batch_size_per_image`` sampled at ``positive_fraction``, positives first. Losses over the
    batch: ``loss_cls`` cross-entropy averaged over the sampled RoIs; ``loss_bbox`` L1 / smooth-L1 of the positives'
    deltas of their class, summed and divided by the number of sampled RoIs; ``loss_mask`` binary cross-entropy of
    the positives' mask of their class against the ground-truth mask RoI-aligned to the mask size and binarised at
    0.5, averaged over pixels.
    Inference, per image: softmax scores, class-specific boxes decoded and clipped; (box, class) pairs scoring above
    ``score_thresh``, class-wise NMS at ``nms_thresh``, the ``detections_per_image`` best; then the masks of the
    detections (``pred_mask_probs`` [D, M, M], pasted by the meta-architecture).
    """

    def __init__(self, *, in_features: list[str], box_pooler: ROIPooler, bbox_head: FCBBoxHead,
                 mask_pooler: ROIPooler | None = None, mask_head: FCNMaskHead | None = None, matcher: MaxIoUMatcher,
                 box_coder: BoxCoder, batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 proposal_append_gt: bool = True, smooth_l1_beta: float = 0.0, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_image: int = 100):
        super().__init__()
        self.in_features = list(in_features)
        self.box_pooler, self.bbox_head = box_pooler, bbox_head
        self.mask_pooler, self.mask_head = mask_pooler, mask_head
        self.num_classes = bbox_head.num_classes
        self.matcher, self.box_coder = matcher, box_coder
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.proposal_append_gt, self.smooth_l1_beta = proposal_append_gt, smooth_l1_beta
        self.score_thresh, self.nms_thresh, self.detections_per_image = score_thresh, nms_thresh, detections_per_image

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> StandardROIHeads:
        r, b, m = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
        channels = shared_channels(input_shape, r.IN_FEATURES, "MODEL.ROI_HEADS.IN_FEATURES")
        scales = [1.0 / input_shape[f].stride for f in r.IN_FEATURES]
        mask = {}
        if cfg.MODEL.MASK_ON:
            mask = dict(mask_pooler=ROIPooler(m.POOLER_RESOLUTION, scales, m.POOLER_SAMPLING_RATIO, m.POOLER_TYPE),
                        mask_head=FCNMaskHead(channels, r.NUM_CLASSES, m.CONV_DIM, m.NUM_CONV))
        thresholds = list(r.IOU_THRESHOLDS) * (2 if len(r.IOU_THRESHOLDS) == 1 else 1)
        return cls(in_features=r.IN_FEATURES,
                   box_pooler=ROIPooler(b.POOLER_RESOLUTION, scales, b.POOLER_SAMPLING_RATIO, b.POOLER_TYPE),
                   bbox_head=FCBBoxHead(channels, b.POOLER_RESOLUTION, r.NUM_CLASSES, b.FC_DIM, b.NUM_FC), **mask,
                   matcher=MaxIoUMatcher(*thresholds, min_pos_iou=r.MIN_POS_IOU),
                   box_coder=BoxCoder(tuple(b.BBOX_REG_WEIGHTS)), batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
                   positive_fraction=r.POSITIVE_FRACTION, proposal_append_gt=r.PROPOSAL_APPEND_GT,
                   smooth_l1_beta=b.SMOOTH_L1_BETA, score_thresh=r.SCORE_THRESH_TEST, nms_thresh=r.NMS_THRESH_TEST,
                   detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: list[tuple[int, int]], targets: list[Instances] | None = None
                ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        """proposals: per image [P_i, 4]; targets (training): per image Instances with gt_boxes, gt_classes and,
        with a mask branch, gt_masks. Returns (per-image detections at the input size, losses)."""
        maps = [features[f] for f in self.in_features]
        if self.training:
            if targets is None:
                raise ValueError("StandardROIHeads needs targets in training")
            rois, classes, matched = self.sample(proposals, targets)
            losses = self.box_losses(maps, rois, classes, matched, targets)
            if self.mask_head is not None:
                losses["loss_mask"] = self.mask_loss(maps, rois, classes, matched, targets)
            return [], losses
        results = self.detect(maps, proposals, image_sizes)
        if self.mask_head is not None:
            self.predict_masks(maps, results)
        return results, {}

    # ------------------------------------------------------------------ training
    def sample(self, proposals: list[torch.Tensor], targets: list[Instances]
               ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per image: sampled RoIs [R_i, 4] (positives first), their class [R_i] (K = background) and the index of
        their ground truth [R_i] (meaningful for positives)."""
        rois, classes, matched_gt = [], [], []
        for props, t in zip(proposals, targets):
            gt = t.gt_boxes
            if self.proposal_append_gt:
                props = torch.cat([gt.to(props.dtype), props])
            iou = box_iou(gt, props) if len(gt) else props.new_zeros((0, len(props)))
            matched, label = self.matcher(iou)
            pos, neg = self.sampler([label])
            idx = torch.cat([torch.nonzero(pos[0]).squeeze(1), torch.nonzero(neg[0]).squeeze(1)])
            cls = torch.full_like(idx, self.num_classes)
            is_pos = label[idx] == 1
            cls[is_pos] = t.gt_classes[matched[idx][is_pos]]
            rois.append(props[idx])
            classes.append(cls)
            matched_gt.append(matched[idx])
        return rois, classes, matched_gt

    def box_losses(self, maps: list[torch.Tensor], rois: list[torch.Tensor], classes: list[torch.Tensor],
                   matched: list[torch.Tensor], targets: list[Instances]) -> dict[str, torch.Tensor]:
        scores, deltas = self.bbox_head(self.box_pooler(maps, rois))
        cls = torch.cat(classes)
        pos = cls < self.num_classes
        gt = torch.cat([t.gt_boxes[m] if len(t.gt_boxes) else r for t, m, r in zip(targets, matched, rois)])
        box_targets = self.box_coder.encode_single(gt[pos], torch.cat(rois)[pos])
        pred = deltas.view(len(cls), -1, 4)[pos, cls[pos]]
        normalizer = max(len(cls), 1)
        return {"loss_cls": F.cross_entropy(scores.float(), cls),
                "loss_bbox": box_regression_loss(pred.float(), box_targets, self.smooth_l1_beta) / normalizer}

    def mask_loss(self, maps: list[torch.Tensor], rois: list[torch.Tensor], classes: list[torch.Tensor],
                  matched: list[torch.Tensor], targets: list[Instances]) -> torch.Tensor:
        pos = [c < self.num_classes for c in classes]
        pos_rois = [r[p] for r, p in zip(rois, pos)]
        logits = self.mask_head(self.mask_pooler(maps, pos_rois))
        if len(logits) == 0:
            return logits.sum() * 0
        size = logits.shape[-1]
        gt_masks = torch.cat([crop_and_resize(t.gt_masks, r, m[p], size)
                              for t, r, m, p in zip(targets, pos_rois, matched, pos)]) >= 0.5
        cls = torch.cat([c[p] for c, p in zip(classes, pos)])
        logits = logits[torch.arange(len(cls), device=cls.device), cls]
        return F.binary_cross_entropy_with_logits(logits.float(), gt_masks.float())

    # ------------------------------------------------------------------ inference
    def detect(self, maps: list[torch.Tensor], proposals: list[torch.Tensor],
               image_sizes: list[tuple[int, int]]) -> list[Instances]:
        scores, deltas = self.bbox_head(self.box_pooler(maps, proposals))
        counts = [p.shape[0] for p in proposals]
        results = []
        for props, s, d, size in zip(proposals, scores.split(counts), deltas.split(counts), image_sizes):
            probs = F.softmax(s.float(), dim=1)[:, :-1]  # [R, K]
            boxes = self.box_coder.decode_single(d.float(), props).view(props.shape[0], -1, 4)
            boxes = clip_boxes_to_image(boxes, size)
            r, k = torch.nonzero(probs > self.score_thresh, as_tuple=True)
            boxes, probs = boxes[r, k], probs[r, k]
            keep = batched_nms(boxes, probs, k, self.nms_thresh)[: self.detections_per_image]
            results.append(Instances(size, pred_boxes=boxes[keep], scores=probs[keep], pred_classes=k[keep]))
        return results

    def predict_masks(self, maps: list[torch.Tensor], results: list[Instances]) -> None:
        """Adds ``pred_mask_probs`` [D, M, M] (the mask of the predicted class) to each image's detections."""
        logits = self.mask_head(self.mask_pooler(maps, [r.pred_boxes for r in results]))
        cls = torch.cat([r.pred_classes for r in results])
        probs = logits[torch.arange(cls.shape[0], device=cls.device), cls].float().sigmoid()
        for r, p in zip(results, probs.split([r.pred_classes.shape[0] for r in results])):
            r.pred_mask_probs = p
