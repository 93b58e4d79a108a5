"""RetinaNet as mmdetection 2.x builds it."""
from __future__ import annotations

from torch import nn

from ...structures import ImageList, Instances
from ..backbone import Backbone
from ..heads import RetinaHead
from .build import META_ARCH_REGISTRY
from .detector import Detector

__all__ = ["RetinaNet"]


@META_ARCH_REGISTRY.register()
class RetinaNet(Detector):
    """backbone -> FPN ``neck`` (p3-p7, P6 by a stride-2 conv as MODEL.FPN.ADD_EXTRA_CONVS says) -> ``bbox_head``
    (RetinaHead). Module names are mmdet's, so released mmdet RetinaNet checkpoints load key for key.

    Training returns {loss_cls, loss_bbox}. Inference returns per image {"instances": Instances(pred_boxes [D, 4]
    XYXY, scores [D], pred_classes [D])} at the input's ``height`` x ``width``.
    """

    def __init__(self, *, backbone: Backbone, neck: nn.Module, bbox_head: RetinaHead, pixel_mean: list[float],
                 pixel_std: list[float], size_divisibility: int = -1):
        super().__init__(backbone=backbone, neck=neck, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         size_divisibility=size_divisibility)
        self.bbox_head = bbox_head

    @classmethod
    def from_config(cls, cfg) -> RetinaNet:
        backbone, neck = cls.build_backbone_and_neck(cfg)
        return cls(backbone=backbone, neck=neck, bbox_head=RetinaHead.from_config(cfg, neck.output_shape()),
                   pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
                   size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY)

    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess(batched_inputs)
        if not self.training:
            return self.postprocess(self.inference(images), batched_inputs)
        targets = self.ground_truth(batched_inputs, masks=False)
        return self.bbox_head(self.extract(images.tensor), images.image_sizes, targets, self.padded_sizes(images))[1]

    def inference(self, images: ImageList) -> list[Instances]:
        """Detections of a normalised, padded batch, per image in its (unpadded) input pixels: pred_boxes, scores,
        pred_classes."""
        return self.bbox_head(self.extract(images.tensor), images.image_sizes)[0]
