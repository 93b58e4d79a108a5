"""What the detection meta-architectures share: normalising and batching the inputs, the ground truth, and scaling
the detections back to each input's original size (masks pasted at that size)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...config.config import ConfigError
from ...structures import ImageList, Instances, paste_masks_in_image
from ..backbone import Backbone, build_backbone
from ..necks import build_neck
from .pixels import PixelNormalizer

__all__ = ["Detector", "detector_postprocess", "DETECTION_SIZE_DIVISIBILITY"]

DETECTION_SIZE_DIVISIBILITY = 32  # mmdet's Pad(size_divisor=32): batches are padded to a multiple of 32


def detector_postprocess(instances: Instances, height: int, width: int, mask_threshold: float = 0.5) -> Instances:
    """Detections at the network input's size -> at (height, width).

    Boxes are scaled by (width / w_in, height / h_in) and clipped to the output; ``pred_mask_probs`` [D, M, M]
    become ``pred_masks`` bool [D, height, width], pasted with the scaled boxes (mmdet rescale=True).
    """
    h_in, w_in = instances.image_size
    scale = torch.tensor([width / w_in, height / h_in] * 2, device=instances.pred_boxes.device)
    boxes = instances.pred_boxes * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    out = Instances((height, width), pred_boxes=boxes, scores=instances.scores, pred_classes=instances.pred_classes)
    if instances.has("pred_mask_probs"):
        out.pred_masks = paste_masks_in_image(instances.pred_mask_probs, boxes, (height, width), mask_threshold)
    return out


class Detector(PixelNormalizer):
    """Base of GeneralizedRCNN and RetinaNet: ``backbone`` -> FPN ``neck`` -> heads.

    Inputs follow Detectron2's contract: ``image`` uint8 [3, H, W] in INPUT.FORMAT, optional ``height`` /
    ``width`` (the size detections are returned at; default the image's) and, for training, ``instances``
    (gt_boxes [G, 4] XYXY in the image's pixels, gt_classes [G], gt_masks bool [G, H, W]).
    Images are normalised and padded into one batch whose sides are multiples of ``size_divisibility``.
    """

    def __init__(self, *, backbone: Backbone, neck: nn.Module, pixel_mean: list[float], pixel_std: list[float],
                 size_divisibility: int = -1, mask_threshold: float = 0.5):
        super().__init__(pixel_mean, pixel_std)
        self.backbone, self.neck = backbone, neck
        self.size_divisibility = (max(backbone.size_divisibility, DETECTION_SIZE_DIVISIBILITY)
                                  if size_divisibility < 0 else size_divisibility)
        self.mask_threshold = mask_threshold

    @staticmethod
    def build_backbone_and_neck(cfg) -> tuple[Backbone, nn.Module]:
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        if neck is None:
            raise ConfigError(f"{cfg.MODEL.META_ARCHITECTURE} reads FPN levels: set MODEL.NECK.NAME 'FPN'")
        return backbone, neck

    def preprocess(self, batched_inputs: list[dict]) -> ImageList:
        return ImageList.from_tensors([self.normalize(x["image"]) for x in batched_inputs], self.size_divisibility)

    def ground_truth(self, batched_inputs: list[dict], masks: bool) -> list[Instances]:
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("Training inputs need 'instances' (use a mapper built with is_train=True, e.g. "
                             "INPUT.DATASET_MAPPER_NAME 'detection')")
        targets = [x["instances"].to(self.device) for x in batched_inputs]
        if masks and not all(t.has("gt_masks") for t in targets):
            raise ValueError("MODEL.MASK_ON needs gt_masks in the training instances (annotations with "
                             "'segmentation'); set MODEL.MASK_ON False to train boxes only")
        return targets

    def padded_sizes(self, images: ImageList) -> list[tuple[int, int]]:
        """Each image's size padded on its own to ``size_divisibility`` (mmdet's per-image pad_shape)."""
        d = max(self.size_divisibility, 1)
        return [(math.ceil(h / d) * d, math.ceil(w / d) * d) for h, w in images.image_sizes]

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.neck(self.backbone(images))

    def postprocess(self, results: list[Instances], batched_inputs: list[dict]) -> list[dict]:
        out = []
        for r, x in zip(results, batched_inputs):
            h, w = x["image"].shape[-2:]
            out.append({"instances": detector_postprocess(r, x.get("height", h), x.get("width", w),
                                                          self.mask_threshold)})
        return out
