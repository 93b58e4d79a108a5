"""ImageClassifier: any registered backbone with its family's ImageNet classification head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from ...config.config import ConfigValueError
from ..backbone import Backbone, build_backbone
from .build import META_ARCH_REGISTRY
from .pixels import PixelNormalizer

__all__ = ["ImageClassifier"]


@META_ARCH_REGISTRY.register()
class ImageClassifier(PixelNormalizer):
    """``backbone.forward_features`` -> the backbone family's ``classifier_head`` (the released classification
    model's final norm, pooling and linear layer, under its released names).

    Keys: ``backbone.<the released file's backbone key>`` and ``head.<its classifier key>`` (e.g. DAT
    ``head.cls_head.weight``, DaViT ``head.head.fc.weight``, ResNet ``head.fc.weight``), so a released ImageNet
    file loads completely, classifier included.

    Input: list of dicts with ``image`` uint8 [3, S, S] (one size per batch) and, in training, ``label`` (int).
    Training returns ``{"loss_cls"}``: random erasing on the normalised batch, Mixup / CutMix with label smoothing
    and soft-target cross-entropy (or plain cross-entropy with label smoothing when both are off), as timm's training
    script. Inference returns per image ``{"logits": [num_classes]}``.
    """

    released_head_prefix = "head."  # where released ImageNet classifier keys go (dense.checkpoint.released)

    def __init__(self, *, backbone: Backbone, head: nn.Module, num_classes: int, pixel_mean: list[float],
                 pixel_std: list[float], label_smoothing: float = 0.0, random_erasing: RandomErasing | None = None,
                 mixup: Mixup | None = None):
        super().__init__(pixel_mean, pixel_std)
        self.backbone, self.head = backbone, head
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.random_erasing, self.mixup = random_erasing, mixup

    @classmethod
    def from_config(cls, cfg) -> ImageClassifier:
        # the classifier reads forward_features: no dense outputs (whose norms a classification file lacks)
        bcfg = cfg.clone()
        bcfg.defrost()
        bcfg.MODEL.BACKBONE.OUT_FEATURES = []
        backbone = build_backbone(bcfg)
        head_cls = type(backbone).classifier_head
        if head_cls is None:
            raise ConfigValueError(f"MODEL.BACKBONE.NAME = {cfg.MODEL.BACKBONE.NAME}: this backbone family declares no "
                                   f"ImageNet classification head (classifier_head), so it cannot be an "
                                   f"ImageClassifier")
        c, k = cfg.INPUT.CLS, cfg.MODEL.CLASSIFIER.NUM_CLASSES
        mixup = None
        if c.MIXUP > 0 or c.CUTMIX > 0:
            mixup = Mixup(mixup_alpha=c.MIXUP, cutmix_alpha=c.CUTMIX, prob=c.MIXUP_PROB,
                          switch_prob=c.MIXUP_SWITCH_PROB, mode=c.MIXUP_MODE,
                          label_smoothing=cfg.MODEL.CLASSIFIER.LABEL_SMOOTHING, num_classes=k)
        erasing = RandomErasing(c.RE_PROB, mode=c.RE_MODE, max_count=c.RE_COUNT, device="cpu") if c.RE_PROB > 0 \
            else None
        return cls(backbone=backbone, head=head_cls(backbone.num_features, k, cfg.MODEL.CLASSIFIER.DROPOUT),
                   num_classes=k, pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
                   label_smoothing=cfg.MODEL.CLASSIFIER.LABEL_SMOOTHING, random_erasing=erasing, mixup=mixup)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [N, 3, H, W] -> logits [N, num_classes]."""
        return self.head(self.backbone.forward_features(images))

    def forward(self, batched_inputs: list[dict]):
        sizes = {tuple(x["image"].shape) for x in batched_inputs}
        if len(sizes) > 1:
            raise ValueError(f"ImageClassifier batches images of one size (the mapper crops them to INPUT.CLS.SIZE); "
                             f"got {sorted(sizes)}")
        images = torch.stack([self.normalize(x["image"]) for x in batched_inputs])
        if not self.training:
            return [{"logits": lg} for lg in self.logits(images)]
        if "label" not in batched_inputs[0]:
            raise ValueError("Training inputs need 'label' (use the 'classification' mapper with is_train=True)")
        labels = torch.tensor([x["label"] for x in batched_inputs], device=self.device)
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if len(bad):
            raise ValueError(f"Label {int(bad[0])} is outside 0..{self.num_classes - 1}: set "
                             f"MODEL.CLASSIFIER.NUM_CLASSES to the dataset's number of classes")
        if self.random_erasing is not None:
            self.random_erasing.device = images.device
            images = self.random_erasing(images)
        if self.mixup is not None:
            if len(images) % 2:
                raise ValueError(f"Mixup / CutMix pair the images of a batch: the images per process "
                                 f"({len(images)}) must be even (SOLVER.IMS_PER_BATCH / processes), or set "
                                 f"INPUT.CLS.MIXUP and INPUT.CLS.CUTMIX to 0")
            images, targets = self.mixup(images, labels)
            loss = SoftTargetCrossEntropy()(self.logits(images), targets)
        else:
            loss = F.cross_entropy(self.logits(images), labels, label_smoothing=self.label_smoothing)
        return {"loss_cls": loss}
