"""SemanticSegmentor: backbone -> optional neck -> decode head (+ auxiliary head in training), with whole,
sliding-window and multi-scale + flip inference (mmseg's EncoderDecoder behind Detectron2's interface)."""
from __future__ import annotations

import torch
from torch import nn

from ...structures import ImageList
from ..backbone import Backbone, build_backbone
from ..heads import DecodeHead, build_aux_head, build_sem_seg_head
from ..layers import resize
from ..necks import build_neck
from .build import META_ARCH_REGISTRY
from .pixels import PixelNormalizer

__all__ = ["SemanticSegmentor", "sem_seg_postprocess", "slide_windows"]


def sem_seg_postprocess(logits: torch.Tensor, image_size: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Crop the padding off ``logits`` [K, Hp, Wp] (at padded-input resolution) and resize to (height, width)."""
    logits = logits[:, : image_size[0], : image_size[1]]
    return resize(logits[None], (height, width), "bilinear", align_corners=False)[0]


def slide_windows(h: int, w: int, crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """mmseg's sliding windows (y0, y1, x0, x1) over an h x w image: a grid with the given stride whose last
    window is shifted back to end at the border; a side shorter than the crop gets one window covering it."""
    ch, cw = crop
    sh, sw = stride
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, h), min(c * sw + cw, w)
            windows.append((max(y1 - ch, 0), y1, max(x1 - cw, 0), x1))
    return windows


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(PixelNormalizer):
    """Encoder-decoder semantic segmentation.

    Training input: list of dicts with ``image`` uint8 [3, H, W] and ``sem_seg`` int64 [H, W]; returns
    ``{"loss_sem_seg": ...}`` (+ ``"loss_aux"`` with an auxiliary head).
    Inference returns per image ``{"sem_seg": [K, height, width]}``: logits, or class probabilities averaged
    over the augmentations when test-time augmentation is on.

    Inference modes (TEST.MODE): "whole" (the image, padded to the backbone's divisibility) or "slide"
    (TEST.SLIDE.CROP_SIZE windows every TEST.SLIDE.STRIDE, logits averaged where windows overlap).
    TEST.AUG (mmseg's ``--aug-test``): the views the mapper made from the original image (``aug_images``, one per
    ratio), each as is and flipped when TEST.AUG.FLIP, in that order; each view's logits resized to the output size,
    softmax, flip undone, the probabilities averaged. An input without ``aug_images`` gets views resized from its
    ``image`` by each ratio instead.
    """

    def __init__(self, *, backbone: Backbone, neck: nn.Module | None, sem_seg_head: DecodeHead,
                 aux_head: DecodeHead | None = None, pixel_mean: list[float], pixel_std: list[float],
                 size_divisibility: int = -1, train_min_size: tuple[int, int] | None = None, test_mode: str = "whole",
                 slide_crop: tuple[int, int] = (512, 512), slide_stride: tuple[int, int] = (341, 341),
                 aug_ratios: tuple[float, ...] = (), aug_flip: bool = False):
        super().__init__(pixel_mean, pixel_std)
        if test_mode not in ("whole", "slide"):
            raise ValueError(f"TEST.MODE must be 'whole' or 'slide', got '{test_mode}'")
        self.backbone, self.neck, self.sem_seg_head, self.aux_head = backbone, neck, sem_seg_head, aux_head
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.train_min_size = train_min_size
        self.test_mode, self.slide_crop, self.slide_stride = test_mode, tuple(slide_crop), tuple(slide_stride)
        self.aug_ratios, self.aug_flip = tuple(aug_ratios), aug_flip

    @classmethod
    def from_config(cls, cfg) -> SemanticSegmentor:
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        head_input = neck.output_shape() if neck is not None else backbone.output_shape()
        aug = cfg.TEST.AUG
        return cls(backbone=backbone, neck=neck, sem_seg_head=build_sem_seg_head(cfg, head_input),
                   aux_head=build_aux_head(cfg, head_input), pixel_mean=cfg.MODEL.PIXEL_MEAN,
                   pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=cfg.INPUT.SIZE_DIVISIBILITY,
                   train_min_size=tuple(cfg.INPUT.CROP.SIZE) if cfg.INPUT.CROP.ENABLED else None,
                   test_mode=cfg.TEST.MODE, slide_crop=tuple(cfg.TEST.SLIDE.CROP_SIZE),
                   slide_stride=tuple(cfg.TEST.SLIDE.STRIDE), aug_ratios=tuple(aug.RATIOS) if aug.ENABLED else (),
                   aug_flip=aug.ENABLED and aug.FLIP)

    def extract(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return self.neck(features) if self.neck is not None else features

    def forward(self, batched_inputs: list[dict]):
        if self.training:
            return self.losses(batched_inputs)
        results = []
        for x in batched_inputs:
            image = self.normalize(x["image"])
            h, w = image.shape[-2:]
            size = (x.get("height", h), x.get("width", w))
            if self.aug_ratios and "aug_images" in x:
                results.append({"sem_seg": self.aug_inference([self.normalize(v) for v in x["aug_images"]], size)})
                continue
            out = self.inference(image)
            results.append({"sem_seg": resize(out[None], size, "bilinear")[0]})
        return results

    def losses(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor]:
        if "sem_seg" not in batched_inputs[0]:
            raise ValueError("Training inputs need 'sem_seg' label maps (use SemSegDatasetMapper with is_train=True)")
        images = ImageList.from_tensors([self.normalize(x["image"]) for x in batched_inputs], self.size_divisibility,
                                        min_size=self.train_min_size)
        targets = ImageList.from_tensors([x["sem_seg"].to(self.device) for x in batched_inputs], self.size_divisibility,
                                         pad_value=self.sem_seg_head.ignore_value,
                                         min_size=tuple(images.tensor.shape[-2:])).tensor
        features = self.extract(images.tensor)
        losses = {"loss_sem_seg": self.sem_seg_head.losses(self.sem_seg_head(features), targets)}
        if self.aux_head is not None:
            losses["loss_aux"] = self.aux_head.losses(self.aux_head(features), targets)
        return losses

    # ------------------------------------------------------------------------------------ inference
    def inference(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised image [3, H, W] -> logits [K, H, W], or with test-time augmentation the class
        probabilities averaged over ratios (and flips) at H x W."""
        if not self.aug_ratios:
            return self.single_scale(image)
        h, w = image.shape[-2:]
        probs = 0
        views = 0
        for ratio in self.aug_ratios:
            size = (int(h * ratio + 0.5), int(w * ratio + 0.5))
            scaled = resize(image[None], size, "bilinear")[0]
            for flip in ([False, True] if self.aug_flip else [False]):
                view = scaled.flip(-1) if flip else scaled
                p = self.single_scale(view).softmax(0)
                p = p.flip(-1) if flip else p
                probs = probs + resize(p[None], (h, w), "bilinear")[0]
                views += 1
        return probs / views

    def aug_inference(self, views: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """mmseg's aug_test: normalised views [3, h_i, w_i] (ratio order) -> class probabilities [K, *size], the
        mean over the views (each also flipped with TEST.AUG.FLIP, right after it) of softmax(logits resized to
        ``size``), flips undone."""
        probs, n = 0, 0
        align = getattr(self.sem_seg_head, "align_corners", False)
        for view in views:
            for flip in ([False, True] if self.aug_flip else [False]):
                logits = self.single_scale(view.flip(-1) if flip else view)
                p = resize(logits[None], size, "bilinear", align)[0].softmax(0)
                probs = probs + (p.flip(-1) if flip else p)
                n += 1
        return probs / n

    def single_scale(self, image: torch.Tensor) -> torch.Tensor:
        """Logits [K, H, W] of one normalised image [3, H, W] in the configured mode."""
        if self.test_mode == "whole":
            return self.whole(image)
        h, w = image.shape[-2:]
        logits = image.new_zeros((self.sem_seg_head.num_classes, h, w))
        count = image.new_zeros((1, h, w))
        for y0, y1, x0, x1 in slide_windows(h, w, self.slide_crop, self.slide_stride):
            logits[:, y0:y1, x0:x1] += self.whole(image[:, y0:y1, x0:x1])
            count[:, y0:y1, x0:x1] += 1
        return logits / count

    def whole(self, image: torch.Tensor) -> torch.Tensor:
        """Logits [K, H, W] of the whole image [3, H, W] (padded to the divisibility, cropped back)."""
        images = ImageList.from_tensors([image], self.size_divisibility)
        logits = self.sem_seg_head(self.extract(images.tensor))
        logits = resize(logits, images.tensor.shape[-2:], "bilinear", self.sem_seg_head.align_corners)
        h, w = image.shape[-2:]
        return logits[0, :, :h, :w]
