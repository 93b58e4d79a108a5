"""Mask R-CNN / Faster R-CNN (``GeneralizedRCNN``) as mmdetection 2.x builds it."""
from __future__ import annotations

from torch import nn

from ...structures import ImageList, Instances
from ..backbone import Backbone
from ..heads import RPNHead, StandardROIHeads
from .build import META_ARCH_REGISTRY
from .detector import Detector

__all__ = ["GeneralizedRCNN"]


@META_ARCH_REGISTRY.register()
class GeneralizedRCNN(Detector):
    """backbone -> FPN ``neck`` (p2-p6) -> ``rpn_head`` (proposals) -> ``roi_head`` (``bbox_head``, and ``mask_head``
    with MODEL.MASK_ON). Module names are mmdet's, so released mmdet Mask R-CNN checkpoints load key for key.

    Training returns {loss_rpn_cls, loss_rpn_bbox, loss_cls, loss_bbox(, loss_mask)}. Inference returns per image
    {"instances": Instances(pred_boxes [D, 4] XYXY, scores [D], pred_classes [D](, pred_masks bool [D, h, w]))}
    at the input's ``height`` x ``width``.
    """

    def __init__(self, *, backbone: Backbone, neck: nn.Module, rpn_head: RPNHead, roi_head: StandardROIHeads,
                 pixel_mean: list[float], pixel_std: list[float], size_divisibility: int = -1,
                 mask_threshold: float = 0.5):
        super().__init__(backbone=backbone, neck=neck, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         size_divisibility=size_divisibility, mask_threshold=mask_threshold)
        self.rpn_head, self.roi_head = rpn_head, roi_head

    @classmethod
    def from_config(cls, cfg) -> GeneralizedRCNN:
        backbone, neck = cls.build_backbone_and_neck(cfg)
        shapes = neck.output_shape()
        return cls(backbone=backbone, neck=neck, rpn_head=RPNHead.from_config(cfg, shapes),
                   roi_head=StandardROIHeads.from_config(cfg, shapes), pixel_mean=cfg.MODEL.PIXEL_MEAN,
                   pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
                   mask_threshold=cfg.MODEL.ROI_MASK_HEAD.MASK_THRESHOLD)

    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess(batched_inputs)
        if not self.training:
            return self.postprocess(self.inference(images), batched_inputs)
        features = self.extract(images.tensor)
        targets = self.ground_truth(batched_inputs, masks=self.roi_head.mask_head is not None)
        proposals, losses = self.rpn_head(features, images.image_sizes, [t.gt_boxes for t in targets],
                                          self.padded_sizes(images))
        losses.update(self.roi_head(features, proposals, images.image_sizes, targets)[1])
        return losses

    def inference(self, images: ImageList) -> list[Instances]:
        """Detections of a normalised, padded batch, per image in its (unpadded) input pixels: pred_boxes, scores,
        pred_classes (and pred_mask_probs [D, M, M], the predicted class's mask in its box, with MODEL.MASK_ON)."""
        features = self.extract(images.tensor)
        proposals, _ = self.rpn_head(features, images.image_sizes)
        return self.roi_head(features, proposals, images.image_sizes)[0]
