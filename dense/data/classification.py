"""Image classification input: timm's ImageNet transforms behind the dataset-mapper interface.

The pixels are timm's (``timm.data.create_transform`` with ``use_prefetcher=True``): the training transform
(random resized crop, flip, RandAugment / colour jitter) and the evaluation transform (resize by INPUT.CLS.CROP_PCT
with the paper's interpolation, centre crop) stop at uint8 [3, S, S]; the model normalises them with
MODEL.PIXEL_MEAN / PIXEL_STD (0-255 scale), then applies random erasing and Mixup / CutMix on the batch in training,
as timm's GPU prefetcher does. Images are decoded with PIL without EXIF rotation, as torchvision's ImageFolder
loader (and so every paper's evaluation) decodes them.
"""
from __future__ import annotations

import torch
from PIL import Image
from timm.data import auto_augment, create_transform

from ..utils.registry import register_as
from .io import read_record_pixels
from .mappers import DATASET_MAPPER_REGISTRY

__all__ = ["ClassificationDatasetMapper", "build_classification_transform"]


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, keeping 0 bits as Pillow < 13 did (an all-black image): timm's PosterizeIncreasing asks for 0
    bits at magnitude 10, which rand-m9-mstd0.5 reaches, and Pillow 13 raises "bits must be between or equal to 1
    and 8" there, stopping the training."""
    if bits_to_keep < 1:
        return img.point(lambda _: 0)
    return _TIMM_POSTERIZE(img, bits_to_keep, **kwargs)


_TIMM_POSTERIZE = auto_augment.posterize
for _name, _op in list(auto_augment.NAME_TO_OP.items()):
    if _op is _TIMM_POSTERIZE:
        auto_augment.NAME_TO_OP[_name] = _posterize


def build_classification_transform(cfg, is_train: bool):
    """timm's transform of INPUT.CLS: PIL RGB image -> uint8 numpy [3, SIZE, SIZE] (not normalised).

    Evaluation: CROP_MODE "center" resizes the short side to floor(SIZE / CROP_PCT) (timm, DaViT, DSAN), "squash"
    both sides (DAT: a square resize that does not keep the aspect ratio), then crops SIZE x SIZE at the centre
    (CROP_PCT 1.0: no crop, e.g. the 384 fine-tuned rows)."""
    c = cfg.INPUT.CLS
    if is_train:
        return create_transform(
            c.SIZE, is_training=True, use_prefetcher=True, scale=tuple(c.SCALE), ratio=tuple(c.RATIO),
            hflip=cfg.INPUT.FLIP_PROB, color_jitter=c.COLOR_JITTER, auto_augment=c.AUTO_AUGMENT or None,
            interpolation=c.TRAIN_INTERPOLATION, mean=_rgb_mean(cfg))  # mean: RandAugment's fill colour
    return create_transform(c.SIZE, is_training=False, use_prefetcher=True, crop_pct=c.CROP_PCT,
                            crop_mode=c.CROP_MODE, interpolation=c.INTERPOLATION)


def _rgb_mean(cfg) -> tuple[float, ...]:
    """MODEL.PIXEL_MEAN in RGB order, 0-1 scale (timm's ``mean``)."""
    mean = [m / 255 for m in cfg.MODEL.PIXEL_MEAN]
    return tuple(mean[::-1] if cfg.INPUT.FORMAT == "BGR" else mean)


@register_as(DATASET_MAPPER_REGISTRY, "classification")
class ClassificationDatasetMapper:
    """Record ``{"file_name", "label", ...}`` -> ``{"image": uint8 [3, S, S] in INPUT.FORMAT, "label": int,
    "height", "width"}`` (height / width: the original image's)."""

    def __init__(self, cfg, is_train: bool = True):
        self.is_train = is_train
        self.transform = build_classification_transform(cfg, is_train)
        self.image_format = cfg.INPUT.FORMAT

    def __call__(self, record: dict) -> dict:
        rgb = read_record_pixels(record, "RGB", exif_transpose=False)
        image = torch.as_tensor(self.transform(Image.fromarray(rgb)))  # uint8 [3, S, S]
        if self.image_format == "BGR":
            image = image.flip(0)
        out = {"file_name": record.get("file_name", ""), "image": image.contiguous(), "height": rgb.shape[0],
               "width": rgb.shape[1]}
        if "label" in record:
            out["label"] = int(record["label"])
        return out
