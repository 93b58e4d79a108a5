"""MaskFormer meta-architecture (Mask2Former): backbone -> Mask2FormerHead -> set losses in training; semantic,
panoptic and instance results at inference."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...data.catalog import MetadataCatalog
from ...structures import ImageList
from ..backbone import Backbone, build_backbone
from ..heads import build_sem_seg_head
from ..heads.mask2former import HungarianMatcher, Mask2FormerHead, SetCriterion
from .build import META_ARCH_REGISTRY
from .mask_former_inference import (instance_inference, panoptic_inference, semantic_inference, semantic_scores,
                                    upsample_mask_logits)
from .semantic_seg import SemanticSegmentor

__all__ = ["MaskFormer"]


@META_ARCH_REGISTRY.register()
class MaskFormer(SemanticSegmentor):
    """Mask classification: every query of the head predicts a class and a mask.

    Training input: list of dicts with ``image`` uint8 [3, H, W] and ``instances`` (``gt_classes`` [M],
    ``gt_masks`` bool [M, H, W]: one mask per segment; the mask_former_* mappers build them from semantic,
    instance or panoptic labels). Returns the weighted losses ``loss_ce``, ``loss_mask``, ``loss_dice`` (and
    ``loss_*_<i>`` for the auxiliary predictions).

    Inference returns per image, at ``height`` x ``width``, any of ``sem_seg`` [K, H, W] (class scores),
    ``panoptic_seg`` (segment ids [H, W], segments_info) and ``instances`` (pred_masks, pred_boxes, scores,
    pred_classes), as MODEL.MASK_FORMER.TEST switches them on. Semantic-only models support every inference
    mode of :class:`SemanticSegmentor` (whole, slide, multi-scale + flip); panoptic and instance results come
    from one whole-image pass.
    """

    def __init__(self, *, backbone: Backbone, sem_seg_head: Mask2FormerHead, criterion: SetCriterion,
                 pixel_mean: list[float], pixel_std: list[float], size_divisibility: int = -1,
                 train_min_size: tuple[int, int] | None = None, test_mode: str = "whole",
                 slide_crop: tuple[int, int] = (512, 512), slide_stride: tuple[int, int] = (341, 341),
                 aug_ratios: tuple[float, ...] = (), aug_flip: bool = False, semantic_on: bool = True,
                 instance_on: bool = False, panoptic_on: bool = False, thing_ids: tuple[int, ...] = (),
                 object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8, detections_per_image: int = 100,
                 semantic_upsample: str = "masks", mask_chunk: int = 32, pad_to_size: int = 0,
                 deep_supervision: bool = True):
        super().__init__(backbone=backbone, neck=None, sem_seg_head=sem_seg_head, pixel_mean=pixel_mean,
                         pixel_std=pixel_std, size_divisibility=size_divisibility, train_min_size=train_min_size,
                         test_mode=test_mode, slide_crop=slide_crop, slide_stride=slide_stride, aug_ratios=aug_ratios,
                         aug_flip=aug_flip)
        if not (semantic_on or instance_on or panoptic_on):
            raise ValueError("MODEL.MASK_FORMER.TEST: switch on at least one of SEMANTIC_ON, INSTANCE_ON, PANOPTIC_ON")
        if (instance_on or panoptic_on) and (test_mode != "whole" or aug_ratios):
            raise ValueError("Sliding-window and multi-scale inference are semantic only: set TEST.MODE whole and "
                             "TEST.AUG.ENABLED False, or MODEL.MASK_FORMER.TEST.INSTANCE_ON / PANOPTIC_ON False")
        if semantic_upsample not in ("masks", "scores"):
            raise ValueError(f"MODEL.MASK_FORMER.TEST.SEMANTIC_UPSAMPLE must be 'masks' or 'scores', got "
                             f"'{semantic_upsample}'")
        self.criterion, self.deep_supervision = criterion, deep_supervision
        self.semantic_on, self.instance_on, self.panoptic_on = semantic_on, instance_on, panoptic_on
        self.thing_ids = set(thing_ids)
        self.object_mask_threshold, self.overlap_threshold = object_mask_threshold, overlap_threshold
        self.detections_per_image = detections_per_image
        self.semantic_upsample, self.mask_chunk, self.pad_to_size = semantic_upsample, mask_chunk, pad_to_size

    @classmethod
    def from_config(cls, cfg) -> MaskFormer:
        if cfg.MODEL.NECK.NAME:
            raise ValueError(f"MaskFormer reads the backbone's features directly (its pixel decoder is the neck): set "
                             f"MODEL.NECK.NAME '' (now '{cfg.MODEL.NECK.NAME}')")
        if cfg.MODEL.AUX_HEAD.NAME:
            raise ValueError("MaskFormer has no auxiliary head (its deep supervision is built in): "
                             "set MODEL.AUX_HEAD.NAME ''")
        backbone = build_backbone(cfg)
        head = build_sem_seg_head(cfg, backbone.output_shape())
        if not isinstance(head, Mask2FormerHead):
            raise ValueError(f"MaskFormer needs MODEL.SEM_SEG_HEAD.NAME 'Mask2FormerHead', got "
                             f"'{cfg.MODEL.SEM_SEG_HEAD.NAME}'")
        mf, t = cfg.MODEL.MASK_FORMER, cfg.MODEL.MASK_FORMER.TEST
        matcher = HungarianMatcher(mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, mf.TRAIN_NUM_POINTS)
        criterion = SetCriterion(head.num_classes, matcher, mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT,
                                 mf.NO_OBJECT_WEIGHT, mf.TRAIN_NUM_POINTS, mf.OVERSAMPLE_RATIO,
                                 mf.IMPORTANCE_SAMPLE_RATIO, num_aux=mf.DEC_LAYERS - 1 if mf.DEEP_SUPERVISION else 0)
        aug = cfg.TEST.AUG
        return cls(backbone=backbone, sem_seg_head=head, criterion=criterion, pixel_mean=cfg.MODEL.PIXEL_MEAN,
                   pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
                   train_min_size=tuple(cfg.INPUT.CROP.SIZE) if cfg.INPUT.CROP.ENABLED else None,
                   test_mode=cfg.TEST.MODE, slide_crop=tuple(cfg.TEST.SLIDE.CROP_SIZE),
                   slide_stride=tuple(cfg.TEST.SLIDE.STRIDE), aug_ratios=tuple(aug.RATIOS) if aug.ENABLED else (),
                   aug_flip=aug.ENABLED and aug.FLIP, semantic_on=t.SEMANTIC_ON, instance_on=t.INSTANCE_ON,
                   panoptic_on=t.PANOPTIC_ON, thing_ids=_thing_ids(cfg) if t.PANOPTIC_ON else (),
                   object_mask_threshold=t.OBJECT_MASK_THRESHOLD, overlap_threshold=t.OVERLAP_THRESHOLD,
                   detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, semantic_upsample=t.SEMANTIC_UPSAMPLE,
                   mask_chunk=t.MASK_CHUNK, pad_to_size=t.PAD_TO_SIZE, deep_supervision=mf.DEEP_SUPERVISION)

    # ------------------------------------------------------------------------------------ training
    def losses(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor]:
        if "instances" not in batched_inputs[0]:
            raise ValueError("MaskFormer trains on one mask per segment ('instances' with gt_classes and gt_masks): "
                             "set INPUT.DATASET_MAPPER_NAME to mask_former_semantic, mask_former_instance, "
                             "mask_former_panoptic, coco_instance_lsj or coco_panoptic_lsj")
        images = ImageList.from_tensors([self.normalize(x["image"]) for x in batched_inputs], self.size_divisibility,
                                        min_size=self.train_min_size)
        hp, wp = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            inst = x["instances"]
            masks = inst.gt_masks.to(self.device, torch.bool)
            targets.append({"labels": inst.gt_classes.to(self.device),
                            "masks": F.pad(masks, (0, wp - masks.shape[-1], 0, hp - masks.shape[-2]))})
        outputs = self.sem_seg_head(self.extract(images.tensor))
        if not self.deep_supervision:
            outputs.pop("aux_outputs", None)
        losses = self.criterion(outputs, targets)
        return {k: v * self.criterion.weight_dict[k] for k, v in losses.items()}

    # ------------------------------------------------------------------------------------ inference
    def forward(self, batched_inputs: list[dict]):
        if self.training or not (self.instance_on or self.panoptic_on):
            return super().forward(batched_inputs)
        return [self.predict(x) for x in batched_inputs]

    def predict(self, x: dict) -> dict:
        """Every switched-on result for one input dict, from one whole-image pass (Detectron2's inference)."""
        image = self.normalize(x["image"])
        h, w = image.shape[-2:]
        out, padded = self.head_outputs(image)
        class_logits = out["pred_logits"][0]
        masks = upsample_mask_logits(out["pred_masks"][0], padded, (h, w), (x.get("height", h), x.get("width", w)),
                                     self.mask_chunk)
        result = {}
        if self.semantic_on:
            result["sem_seg"] = semantic_inference(class_logits, masks)
        if self.panoptic_on:
            result["panoptic_seg"] = panoptic_inference(class_logits, masks, self.thing_ids,
                                                        self.object_mask_threshold, self.overlap_threshold)
        if self.instance_on:
            result["instances"] = instance_inference(class_logits, masks, self.detections_per_image,
                                                     self.thing_ids if self.panoptic_on else None)
        return result

    def single_scale(self, image: torch.Tensor) -> torch.Tensor:
        """Semantic scores [K, H, W] of one normalised image in the configured mode; with PAD_TO_SIZE, sides
        shorter than it are first padded with black pixels (ViT-Adapter's PadShortSide), cut off after."""
        h, w = image.shape[-2:]
        ph, pw = max(h, self.pad_to_size), max(w, self.pad_to_size)
        if (ph, pw) == (h, w):
            return super().single_scale(image)
        black = (-self.pixel_mean / self.pixel_std).view(-1, 1, 1)
        padded = black.expand(-1, ph, pw).clone()
        padded[:, :h, :w] = image
        return super().single_scale(padded)[:, :h, :w]

    def head_outputs(self, image: torch.Tensor) -> tuple[dict, tuple[int, int]]:
        """The head's outputs for one normalised image [3, H, W] padded to the size divisibility (``pred_logits``
        [1, Q, K + 1], ``pred_masks`` [1, Q, Hp / 4, Wp / 4], ``aux_outputs``) and the padded size (Hp, Wp)."""
        images = ImageList.from_tensors([image], self.size_divisibility)
        return self.sem_seg_head(self.extract(images.tensor)), tuple(images.tensor.shape[-2:])

    def whole(self, image: torch.Tensor) -> torch.Tensor:
        """Semantic scores [K, H, W] of the whole image [3, H, W] (padded to the divisibility, cropped back)."""
        out, padded = self.head_outputs(image)
        return self.semantic_scores(out, padded, tuple(image.shape[-2:]))

    def semantic_scores(self, out: dict, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """Semantic scores [K, H, W] of head outputs ``out`` for an image of ``size`` padded to ``padded``."""
        return semantic_scores(out["pred_logits"][0], out["pred_masks"][0], padded, size, self.semantic_upsample,
                               self.mask_chunk)


def _thing_ids(cfg) -> tuple[int, ...]:
    """Contiguous ids of the thing classes of the first test dataset (panoptic inference keeps thing segments apart
    and merges stuff segments of one class)."""
    if not cfg.DATASETS.TEST:
        raise ValueError("Panoptic inference needs the thing classes of a dataset: set DATASETS.TEST to a panoptic "
                         "dataset (its metadata's thing_dataset_id_to_contiguous_id), or PANOPTIC_ON False")
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    ids = meta.get("thing_dataset_id_to_contiguous_id")
    if ids is None:
        raise ValueError(f"Dataset '{cfg.DATASETS.TEST[0]}' has no thing_dataset_id_to_contiguous_id metadata, which "
                         f"panoptic inference needs (MODEL.MASK_FORMER.TEST.PANOPTIC_ON)")
    return tuple(sorted(ids.values()))
