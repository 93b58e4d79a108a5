"""Mappers for mask-classification models (MaskFormer): besides the image they give one binary mask per segment,
``instances`` with ``gt_classes`` int64 [M] and ``gt_masks`` bool [M, H, W] (Detectron2 Mask2Former's
dataset mappers, on dense's joint transforms).

- ``mask_former_semantic``: a semantic label map, one mask per class present (ignore excluded);
- ``mask_former_instance``: COCO instance annotations (crowd regions dropped);
- ``mask_former_panoptic``: a COCO-panoptic PNG + segments_info, one mask per non-crowd segment;
- ``coco_instance_lsj`` / ``coco_panoptic_lsj``: the same with Mask2Former's COCO large-scale jitter.

Masks a crop leaves empty are dropped. At test time each behaves as the plain mapper (image only).
"""
from __future__ import annotations


import numpy as np
import torch
from torchvision import tv_tensors

from ..structures import Instances
from ..utils.registry import register_as
from .io import BadSampleError, read_image
from .mappers import (DATASET_MAPPER_REGISTRY, InstanceDatasetMapper, SemSegDatasetMapper, _to_model_image,
                      read_record_image)
from .transforms import build_lsj_transforms, build_transforms

__all__ = ["MaskFormerSemanticDatasetMapper", "MaskFormerInstanceDatasetMapper", "MaskFormerPanopticDatasetMapper",
           "COCOInstanceLSJDatasetMapper", "COCOPanopticLSJDatasetMapper",
           "rgb2id", "semantic_to_instances"]


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """COCO-panoptic PNG colours [H, W, 3] (RGB) -> segment ids R + 256 G + 256^2 B, int64 [H, W]."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def _instances(classes: torch.Tensor, masks: torch.Tensor) -> Instances:
    """Instances of the non-empty masks (bool [M, H, W])."""
    keep = masks.flatten(1).any(1)
    return Instances(tuple(masks.shape[-2:]), gt_classes=classes[keep], gt_masks=masks[keep])


def semantic_to_instances(sem_seg: torch.Tensor, ignore_label: int) -> Instances:
    """One mask per class present in a label map [H, W] (ignore excluded), classes ascending."""
    classes = torch.unique(sem_seg)
    classes = classes[classes != ignore_label]
    return _instances(classes.long(), sem_seg[None] == classes[:, None, None])


@register_as(DATASET_MAPPER_REGISTRY, "mask_former_semantic")
class MaskFormerSemanticDatasetMapper(SemSegDatasetMapper):
    """:class:`SemSegDatasetMapper` plus, for training, per-class ``instances`` of the augmented label map."""

    def __call__(self, record: dict) -> dict:
        record = super().__call__(record)
        if self.is_train:
            record["instances"] = semantic_to_instances(record["sem_seg"], self.ignore_label)
        return record


@register_as(DATASET_MAPPER_REGISTRY, "mask_former_instance")
class MaskFormerInstanceDatasetMapper(InstanceDatasetMapper):
    """:class:`InstanceDatasetMapper` with the instances whose mask the augmentation emptied dropped."""

    def __call__(self, record: dict) -> dict:
        record = super().__call__(record)
        if self.is_train:
            inst = record["instances"]
            record["instances"] = _instances(inst.gt_classes, inst.gt_masks)
        return record


@register_as(DATASET_MAPPER_REGISTRY, "coco_instance_lsj")
class COCOInstanceLSJDatasetMapper(MaskFormerInstanceDatasetMapper):
    """``mask_former_instance`` with large-scale jitter (flip, ResizeScale, FixedSizeCrop) for training."""

    def __init__(self, cfg, is_train: bool = True):
        super().__init__(cfg, is_train)
        if is_train:
            self.transforms = build_lsj_transforms(cfg)


@register_as(DATASET_MAPPER_REGISTRY, "mask_former_panoptic")
class MaskFormerPanopticDatasetMapper:
    """Records with ``pan_seg_file_name`` (COCO-panoptic PNG) and ``segments_info`` (``id``, contiguous
    ``category_id``, ``iscrowd``) -> image + one mask per non-crowd segment, augmented with the image."""

    def __init__(self, cfg, is_train: bool = True):
        self.is_train = is_train
        self.transforms = build_transforms(cfg, is_train)
        self.image_format = cfg.INPUT.FORMAT
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES

    def _segment_masks(self, record: dict, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        path = record["pan_seg_file_name"]
        ids = rgb2id(read_image(path, "RGB"))
        if ids.shape != shape:
            raise BadSampleError(f"Panoptic label '{path}' is {ids.shape[1]}x{ids.shape[0]} (WxH) but its image "
                                 f"'{record['file_name']}' is {shape[1]}x{shape[0]}")
        segments = [s for s in record["segments_info"] if not s.get("iscrowd", 0)]
        classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
        bad = classes[(classes < 0) | (classes >= self.num_classes)]
        if len(bad):
            raise BadSampleError(f"Segments of '{path}' have classes {bad.tolist()[:10]} outside "
                                 f"0..{self.num_classes - 1}: check MODEL.SEM_SEG_HEAD.NUM_CLASSES and the dataset's "
                                 f"category mapping")
        masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *shape), dtype=bool)
        return classes, torch.from_numpy(masks)

    def __call__(self, record: dict) -> dict:
        record, sample = read_record_image(record)
        h, w = record["height"], record["width"]
        if self.is_train:
            classes, masks = self._segment_masks(record, (h, w))
            sample["masks"] = tv_tensors.Mask(masks)
        sample = self.transforms(sample)
        record["image"] = _to_model_image(sample["image"], self.image_format)
        if self.is_train:
            record["instances"] = _instances(classes, sample["masks"].as_subclass(torch.Tensor).bool())
        return record


@register_as(DATASET_MAPPER_REGISTRY, "coco_panoptic_lsj")
class COCOPanopticLSJDatasetMapper(MaskFormerPanopticDatasetMapper):
    """``mask_former_panoptic`` with large-scale jitter (flip, ResizeScale, FixedSizeCrop) for training."""

    def __init__(self, cfg, is_train: bool = True):
        super().__init__(cfg, is_train)
        if is_train:
            self.transforms = build_lsj_transforms(cfg)
