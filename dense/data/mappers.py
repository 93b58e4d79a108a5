"""Dataset mappers: a dataset record (dict) -> the model input dict.

Model input (Detectron2's contract): ``image`` uint8 [3, H, W] in INPUT.FORMAT, ``height``/``width``
(the size predictions are returned at: the original image size), and for training ``sem_seg``
(int64 [H, W]) or ``instances`` (Instances with gt_boxes XYXY, gt_classes, gt_masks bool [N, H, W]).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from fvcore.common.registry import Registry
from torchvision import tv_tensors

from ..structures import Instances
from ..utils.registry import register_as
from .io import BadSampleError, read_record_pixels, read_sem_seg
from .transforms import ResizeToMultiple, build_detection_transforms, build_transforms, rescale_size, resize_sample

__all__ = ["DATASET_MAPPER_REGISTRY", "build_mapper", "SemSegDatasetMapper", "InstanceDatasetMapper",
           "DetectionDatasetMapper"]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Dataset mappers by name (INPUT.DATASET_MAPPER_NAME): a class constructed as ``cls(cfg, is_train)`` whose
instances map a dataset record to the model's input dict.
"""


def read_record_image(record: dict) -> tuple[dict, dict]:
    """A shallow copy of ``record`` with ``height``/``width`` set to the image's size when absent, and the transform
    sample ``{"image": tv_tensors.Image uint8 [3, H, W] (BGR)}`` (the image: :func:`read_record_pixels`). A size that
    disagrees with the record is a BadSampleError naming the file."""
    record = copy.copy(record)
    image = read_record_pixels(record, "BGR")
    h, w = image.shape[:2]
    if (record.get("height", h), record.get("width", w)) != (h, w):
        raise BadSampleError(f"Image '{record['file_name']}' is {w}x{h} but its annotation says "
                             f"{record['width']}x{record['height']}")
    record.setdefault("height", h)
    record.setdefault("width", w)
    return record, {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))}


def build_mapper(cfg, is_train: bool):
    """The mapper named by INPUT.DATASET_MAPPER_NAME."""
    from ..config.config import ConfigError

    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_REGISTRY:
        known = ", ".join(sorted(k for k, _ in DATASET_MAPPER_REGISTRY))
        raise ConfigError(f"INPUT.DATASET_MAPPER_NAME = '{name}' is not registered; known mappers: {known}")
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train)


def _to_model_image(image: torch.Tensor, fmt: str) -> torch.Tensor:
    """BGR uint8 [3, H, W] tv_tensor -> plain tensor in ``fmt``."""
    image = image.as_subclass(torch.Tensor)
    return (image.flip(0) if fmt == "RGB" else image).contiguous()


@register_as(DATASET_MAPPER_REGISTRY, "semantic")
class SemSegDatasetMapper:
    """Reads the image (and, for training, its label map), applies the config's augmentations and
    validates the labels: every value must be < NUM_CLASSES or equal IGNORE_VALUE.

    At test time with TEST.AUG.ENABLED it also gives ``aug_images``: the original image rescaled for every ratio r of
    TEST.AUG.RATIOS to fit (int(MAX_SIZE_TEST * r), int(MIN_SIZE_TEST * r)) with the keep-ratio rule, by
    INPUT.RESIZE_BACKEND, then up to a multiple of INPUT.TEST_RESIZE_MULTIPLE when set (mmseg's ``MultiScaleFlipAug``;
    the model flips them)."""

    def __init__(self, cfg, is_train: bool = True):
        self.is_train = is_train
        self.transforms = build_transforms(cfg, is_train)
        inp, aug = cfg.INPUT, cfg.TEST.AUG
        self.aug_scales = [(int(inp.MAX_SIZE_TEST * r), int(inp.MIN_SIZE_TEST * r)) for r in aug.RATIOS] \
            if not is_train and aug.ENABLED and inp.MIN_SIZE_TEST > 0 else []
        self.resize_backend = inp.RESIZE_BACKEND
        self.to_multiple = ResizeToMultiple(inp.TEST_RESIZE_MULTIPLE, inp.RESIZE_BACKEND) \
            if inp.TEST_RESIZE_MULTIPLE > 0 else (lambda s: s)
        self.image_format = cfg.INPUT.FORMAT
        self.ignore_label = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES

    def _read_label(self, record: dict, image_shape: tuple[int, int]) -> np.ndarray:
        path = record["sem_seg_file_name"]
        label = read_sem_seg(path, record.get("reduce_zero_label", False), self.ignore_label)
        if label.shape != image_shape:
            raise BadSampleError(f"Label '{path}' is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                                 f"'{record['file_name']}' is {image_shape[1]}x{image_shape[0]}")
        bad = np.unique(label[(label >= self.num_classes) & (label != self.ignore_label)])
        if bad.size:
            raise BadSampleError(
                f"Label '{path}' has values {bad.tolist()[:10]} outside 0..{self.num_classes - 1} (ignore = "
                f"{self.ignore_label}). Check MODEL.SEM_SEG_HEAD.NUM_CLASSES and the dataset's reduce_zero_label"
            )
        return label

    def __call__(self, record: dict) -> dict:
        record, sample = read_record_image(record)
        h, w = record["height"], record["width"]
        if self.is_train:
            sample["sem_seg"] = tv_tensors.Mask(torch.from_numpy(self._read_label(record, (h, w))))
        if self.aug_scales:
            record["aug_images"] = [
                _to_model_image(self.to_multiple(resize_sample(sample, *rescale_size(h, w, long, short),
                                                               self.resize_backend))["image"],
                                self.image_format) for long, short in self.aug_scales]
        sample = self.transforms(sample)
        record["image"] = _to_model_image(sample["image"], self.image_format)
        if "sem_seg" in sample:
            record["sem_seg"] = sample["sem_seg"].as_subclass(torch.Tensor).long()
        return record


def annotations_to_masks(annotations: list[dict], h: int, w: int) -> np.ndarray:
    """Polygons / RLE of COCO annotations -> bool [N, h, w]."""
    from pycocotools import mask as mask_util

    masks = np.zeros((len(annotations), h, w), dtype=bool)
    for i, ann in enumerate(annotations):
        seg = ann["segmentation"]
        if isinstance(seg, list):
            polys = [p for p in seg if len(p) >= 6]
            if not polys:
                raise BadSampleError(f"Annotation {i} has no valid polygon (each needs >= 3 points): {seg}")
            rle = mask_util.merge(mask_util.frPyObjects(polys, h, w))
        elif isinstance(seg.get("counts"), list):
            rle = mask_util.frPyObjects(seg, h, w)
        else:
            rle = seg
        masks[i] = mask_util.decode(rle).astype(bool)
    return masks


@register_as(DATASET_MAPPER_REGISTRY, "instance")
class InstanceDatasetMapper:
    """COCO-style records -> image + Instances (gt_boxes, gt_classes, gt_masks). Crowd regions are
    dropped for training; boxes left empty by cropping are removed with their masks."""

    def __init__(self, cfg, is_train: bool = True, use_masks: bool = True):
        self.is_train = is_train
        self.transforms = build_transforms(cfg, is_train)
        self.image_format = cfg.INPUT.FORMAT
        self.use_masks = use_masks

    def __call__(self, record: dict) -> dict:
        record, sample = read_record_image(record)
        h, w = record["height"], record["width"]
        anns = [a for a in record.pop("annotations", []) if not a.get("iscrowd", 0)] if self.is_train else []
        if self.is_train:
            boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            sample["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
            if self.use_masks:
                sample["masks"] = tv_tensors.Mask(torch.from_numpy(annotations_to_masks(anns, h, w)))
        sample = self.transforms(sample)
        record["image"] = _to_model_image(sample["image"], self.image_format)
        if self.is_train:
            ih, iw = record["image"].shape[-2:]
            boxes = sample["boxes"].as_subclass(torch.Tensor)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, iw)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ih)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            inst = Instances((ih, iw), gt_boxes=boxes[keep],
                             gt_classes=torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)[keep])
            if self.use_masks:
                inst.gt_masks = sample["masks"].as_subclass(torch.Tensor)[keep].bool()
            record["instances"] = inst
        return record


@register_as(DATASET_MAPPER_REGISTRY, "detection")
class DetectionDatasetMapper(InstanceDatasetMapper):
    """COCO-style records -> image + Instances for GeneralizedRCNN and RetinaNet, with the papers' mmdet pipelines
    (:func:`build_detection_transforms`: single-scale, multi-scale, DETR-style crop policy). Masks are loaded with
    MODEL.MASK_ON only."""

    def __init__(self, cfg, is_train: bool = True):
        self.is_train = is_train
        self.transforms = build_detection_transforms(cfg, is_train)
        self.image_format = cfg.INPUT.FORMAT
        self.use_masks = cfg.MODEL.MASK_ON

    def __call__(self, record: dict) -> dict:
        if self.is_train and self.use_masks:
            bare = [a for a in record.get("annotations", []) if "segmentation" not in a and not a.get("iscrowd", 0)]
            if bare:
                raise BadSampleError(f"{len(bare)} annotations of '{record['file_name']}' have no 'segmentation': "
                                     f"MODEL.MASK_ON needs masks (set it False to train boxes only)")
        return super().__call__(record)
