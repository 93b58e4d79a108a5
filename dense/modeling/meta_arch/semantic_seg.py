"""SemanticSegmentor: backbone -> optional neck -> decode head (-> optional auxiliary head)."""
from __future__ import annotations

import torch
from torch import nn

from ...structures import ImageList
from ..backbone import Backbone, build_backbone
from ..heads import DecodeHead, build_sem_seg_head
from ..layers import resize
from ..necks import build_neck
from .build import META_ARCH_REGISTRY

__all__ = ["SemanticSegmentor", "sem_seg_postprocess"]


def sem_seg_postprocess(logits: torch.Tensor, image_size: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Crop the padding off ``logits`` [K, Hp, Wp] (at padded-input resolution) and resize to (height, width)."""
    logits = logits[:, : image_size[0], : image_size[1]]
    return resize(logits[None], (height, width), "bilinear", align_corners=False)[0]


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """Encoder-decoder semantic segmentation (mmseg EncoderDecoder, Detectron2 interface).

    Training input: list of dicts with ``image`` uint8 [3, H, W] and ``sem_seg`` int64 [H, W];
    returns ``{"loss_sem_seg": ...}`` (+ ``loss_aux`` with an auxiliary head).
    Inference returns per image ``{"sem_seg": logits [K, height, width]}``.
    """

    def __init__(self, *, backbone: Backbone, neck: nn.Module | None, sem_seg_head: DecodeHead,
                 pixel_mean: list[float], pixel_std: list[float], size_divisibility: int = -1,
                 train_min_size: tuple[int, int] | None = None):
        super().__init__()
        self.backbone, self.neck, self.sem_seg_head = backbone, neck, sem_seg_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.train_min_size = train_min_size

    @classmethod
    def from_config(cls, cfg) -> "SemanticSegmentor":
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        head_input = neck.output_shape() if neck is not None else backbone.output_shape()
        return cls(backbone=backbone, neck=neck, sem_seg_head=build_sem_seg_head(cfg, head_input),
                   pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD,
                   size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
                   train_min_size=tuple(cfg.INPUT.CROP.SIZE) if cfg.INPUT.CROP.ENABLED else None)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: list[dict]) -> ImageList:
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        min_size = self.train_min_size if self.training else None
        return ImageList.from_tensors(images, self.size_divisibility, min_size=min_size)

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return self.neck(features) if self.neck is not None else features

    def forward(self, batched_inputs: list[dict]):
        images = self.preprocess(batched_inputs)
        features = self.extract(images.tensor)
        logits = self.sem_seg_head(features)
        if self.training:
            if "sem_seg" not in batched_inputs[0]:
                raise ValueError("Training inputs need 'sem_seg' label maps (use SemSegDatasetMapper with is_train=True)")
            targets = ImageList.from_tensors(
                [x["sem_seg"].to(self.device) for x in batched_inputs], self.size_divisibility,
                pad_value=self.sem_seg_head.ignore_value, min_size=tuple(images.tensor.shape[-2:]),
            ).tensor
            return {"loss_sem_seg": self.sem_seg_head.losses(logits, targets)}
        logits = resize(logits, images.tensor.shape[-2:], "bilinear", self.sem_seg_head.align_corners)
        results = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            results.append({"sem_seg": sem_seg_postprocess(logits[i], (h, w), x.get("height", h), x.get("width", w))})
        return results
