"""Joint image / mask / box augmentations on torchvision tv_tensors.

A *sample* is a dict of tv_tensors: ``image`` (Image uint8 [3, H, W], BGR while augmenting),
optional ``sem_seg`` (Mask [H, W]), ``masks`` (Mask [N, H, W]) and ``boxes`` (BoundingBoxes XYXY).
Each transform is a callable sample -> sample that draws its randomness from torch's global RNG
(so a data loader can make every sample reproducible by seeding it). Geometry is applied with
``torchvision.transforms.v2.functional``, which dispatches per tv_tensor type (bilinear for images,
nearest for masks, coordinate maps for boxes).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = ["RESIZE_BACKENDS", "resize_sample", "rescale_size", "Compose", "ResizeRatioRange", "ResizeShortestEdge",
           "ResizeToMultiple", "RandomCropCatMax", "RandomCropRange", "RandomEither", "RandomFlip",
           "PhotoMetricDistortion", "ResizeScale", "FixedSizeCrop", "build_transforms", "build_detection_transforms",
           "build_lsj_transforms"]


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    """Integer in [low, high)."""
    return int(torch.randint(low, high, ()))


def _size(sample: dict) -> tuple[int, int]:
    h, w = sample["image"].shape[-2:]
    return int(h), int(w)


def _resize_torchvision(v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """torchvision: bilinear without antialiasing for images, nearest for masks, scaled coordinates for boxes."""
    return TF.resize(v, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=False)


def _resize_cv2(v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """mmcv.imresize: cv2.resize on the uint8 HWC array, INTER_LINEAR for images and INTER_NEAREST for label maps and
    masks (mmseg / mmdet pipelines); boxes are scaled as torchvision does (mmdet: x * new_w / w)."""
    if isinstance(v, tv_tensors.BoundingBoxes):
        return TF.resize(v, [h, w])
    image = isinstance(v, tv_tensors.Image)
    data = v.as_subclass(torch.Tensor)
    if data.shape[-2:] == (h, w):
        return v
    planes = data.ndim == 3  # [C, H, W] image or [N, H, W] masks: resized as one channels-last array
    if planes and data.shape[0] == 0:
        return tv_tensors.wrap(data.new_zeros((0, h, w)), like=v)
    arr = data.permute(1, 2, 0).numpy() if planes else data.numpy()
    dtype = arr.dtype
    if dtype == np.bool_ or dtype == np.int64:  # cv2 has no bool / int64 images: nearest is exact in uint8 / int32
        arr = arr.astype(np.uint8 if dtype == np.bool_ or arr.max(initial=0) < 256 else np.int32)
    out = cv2.resize(np.ascontiguousarray(arr), (w, h), interpolation=cv2.INTER_LINEAR if image else cv2.INTER_NEAREST)
    out = torch.from_numpy(out.astype(dtype, copy=False))
    return tv_tensors.wrap(out.reshape(h, w, -1).permute(2, 0, 1).contiguous() if planes else out, like=v)


def _pil_plane(plane: np.ndarray, h: int, w: int, interp) -> np.ndarray:
    return np.asarray(Image.fromarray(plane).resize((w, h), interp))


def _resize_pil(v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Detectron2's ``ResizeTransform``: PIL on uint8 arrays (bilinear for images, nearest for label maps and masks:
    ``apply_segmentation``), torch's nearest for label values PIL cannot hold; boxes scaled."""
    if isinstance(v, tv_tensors.BoundingBoxes):
        return TF.resize(v, [h, w])
    data = v.as_subclass(torch.Tensor)
    if data.shape[-2:] == (h, w):
        return v
    if isinstance(v, tv_tensors.Image):
        out = _pil_plane(data.permute(1, 2, 0).numpy(), h, w, Image.BILINEAR)
        return tv_tensors.wrap(torch.from_numpy(out.copy()).permute(2, 0, 1).contiguous(), like=v)
    if data.dtype != torch.bool and (data.numel() == 0 or data.min() < 0 or data.max() > 255):
        out = F.interpolate(data[None, None] if data.ndim == 2 else data[None], (h, w), mode="nearest")
        return tv_tensors.wrap(out.reshape(*data.shape[:-2], h, w), like=v)
    planes = data.reshape(-1, *data.shape[-2:]).to(torch.uint8).numpy()
    out = np.stack([_pil_plane(p, h, w, Image.NEAREST) for p in planes]) if len(planes) else np.zeros((0, h, w))
    return tv_tensors.wrap(torch.from_numpy(out).to(data.dtype).reshape(*data.shape[:-2], h, w), like=v)


# INPUT.RESIZE_BACKEND: how images (and their label maps / masks) are resized
RESIZE_BACKENDS = {"torchvision": _resize_torchvision, "cv2": _resize_cv2, "pil": _resize_pil}


def resize_sample(sample: dict, h: int, w: int, backend: str = "torchvision") -> dict:
    """Every tv_tensor of ``sample`` resized to h x w by ``backend`` (a key of RESIZE_BACKENDS)."""
    fn = RESIZE_BACKENDS[backend]
    return {k: fn(v, h, w) for k, v in sample.items()}


def _check_backend(backend: str) -> str:
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f"INPUT.RESIZE_BACKEND must be one of {sorted(RESIZE_BACKENDS)}, got '{backend}'")
    return backend


class Compose:
    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


def rescale_size(h: int, w: int, long_edge: float, short_edge: float) -> tuple[int, int]:
    """Keep-ratio size fitting within (long_edge, short_edge) as mmcv.imrescale: the scale is
    min(long/max(h, w), short/min(h, w)), sizes rounded half up."""
    scale = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


def shortest_edge_size(h: int, w: int, short_edge: float, max_size: float) -> tuple[int, int]:
    """Detectron2's ``ResizeShortestEdge.get_output_shape``: the short side set to ``short_edge``, then both sides
    scaled down if the long one exceeds ``max_size``, rounded half up (equal to rescale_size but for float rounding
    at .5: the pil backend's rule, so that its sizes are Detectron2's)."""
    scale = short_edge / min(h, w)
    newh, neww = (short_edge, scale * w) if h < w else (scale * h, short_edge)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


class ResizeRatioRange:
    """mmseg ``Resize(img_scale=(long, short), ratio_range=(lo, hi), keep_ratio=True)``: draw r in
    [lo, hi), then keep-ratio rescale to fit (long*r, short*r)."""

    def __init__(self, long_edge: int, short_edge: int, ratio_range: tuple[float, float], backend: str = "torchvision"):
        self.long_edge, self.short_edge, self.ratio_range = long_edge, short_edge, ratio_range
        self.backend = _check_backend(backend)

    def __call__(self, sample: dict) -> dict:
        r = _uniform(*self.ratio_range)
        size = rescale_size(*_size(sample), self.long_edge * r, self.short_edge * r)
        return resize_sample(sample, *size, self.backend)


class ResizeToMultiple:
    """mmseg ``ResizeToMultiple(size_divisor)`` (mmcv.imresize_to_multiple at scale 1): resize each side up to the next
    multiple of ``divisor``, a second resampling after the keep-ratio resize (none when both sides are multiples)."""

    def __init__(self, divisor: int, backend: str = "torchvision"):
        self.divisor, self.backend = divisor, _check_backend(backend)

    def __call__(self, sample: dict) -> dict:
        h, w = _size(sample)
        d = self.divisor
        return resize_sample(sample, -(-h // d) * d, -(-w // d) * d, self.backend)


class ResizeShortestEdge:
    """Detectron2 ``ResizeShortestEdge``: short side from ``short_edge_lengths`` ("choice": one of them,
    "range": uniform between the two), long side capped at ``max_size``."""

    def __init__(self, short_edge_lengths: tuple[int, ...], max_size: int, sample_style: str = "choice",
                 backend: str = "torchvision"):
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', got '{sample_style}'")
        if sample_style == "range" and len(short_edge_lengths) != 2:
            raise ValueError(f"'range' sampling needs two sizes (min, max), got {short_edge_lengths}")
        self.lengths, self.max_size, self.style = tuple(short_edge_lengths), max_size, sample_style
        self.backend = _check_backend(backend)

    def __call__(self, sample: dict) -> dict:
        if self.style == "range":
            short = _randint(self.lengths[0], self.lengths[1] + 1)
        else:
            short = self.lengths[_randint(0, len(self.lengths))]
        h, w = _size(sample)
        long_edge = self.max_size or float("inf")
        size = (shortest_edge_size(h, w, short, long_edge) if self.backend == "pil"  # Detectron2's rounding
                else rescale_size(h, w, long_edge, short))
        return resize_sample(sample, *size, self.backend)


class RandomCropCatMax:
    """mmseg ``RandomCrop(crop_size, cat_max_ratio)``: a random (h, w) window (the whole image along a side
    shorter than the crop); when ``cat_max_ratio < 1`` up to 10 windows are drawn until no class
    (ignoring ``ignore_label``) covers ``cat_max_ratio`` or more of it and at least two classes appear."""

    def __init__(self, crop_size: tuple[int, int], cat_max_ratio: float = 1.0, ignore_label: int = 255):
        self.crop_size, self.cat_max_ratio, self.ignore_label = tuple(crop_size), cat_max_ratio, ignore_label

    def _window(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        return _randint(0, h - ch + 1), _randint(0, w - cw + 1), ch, cw

    def __call__(self, sample: dict) -> dict:
        h, w = _size(sample)
        top, left, ch, cw = self._window(h, w)
        if self.cat_max_ratio < 1.0 and "sem_seg" in sample:
            for _ in range(10):
                seg = sample["sem_seg"][top:top + ch, left:left + cw]
                _, counts = torch.unique(seg[seg != self.ignore_label], return_counts=True)
                if len(counts) > 1 and counts.max().item() / counts.sum().item() < self.cat_max_ratio:
                    break
                top, left, ch, cw = self._window(h, w)
        return {k: TF.crop(v, top, left, ch, cw) for k, v in sample.items()}


class RandomFlip:
    """Horizontal flip with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, sample: dict) -> dict:
        if _uniform(0, 1) < self.prob:
            return {k: TF.horizontal_flip(v) for k, v in sample.items()}
        return sample


class PhotoMetricDistortion:
    """mmseg ``PhotoMetricDistortion`` on a BGR uint8 image, each step with probability 0.5:
    brightness (+U(-32, 32)), contrast (x U(0.5, 1.5)) before or after the HSV steps, saturation
    (x U(0.5, 1.5)), hue (+randint(-18, 18) on OpenCV's 0..180 scale). Values clip to 0..255 per step."""

    def __init__(self, brightness_delta: int = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta, self.contrast_range = brightness_delta, contrast_range
        self.saturation_range, self.hue_delta = saturation_range, hue_delta

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _contrast(self, img: np.ndarray) -> np.ndarray:
        return self._convert(img, alpha=_uniform(*self.contrast_range)) if _randint(0, 2) else img

    def __call__(self, sample: dict) -> dict:
        img = sample["image"].permute(1, 2, 0).numpy()
        if _randint(0, 2):
            img = self._convert(img, beta=_uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = _randint(0, 2) == 1
        if contrast_first:
            img = self._contrast(img)
        if _randint(0, 2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[..., 1] = self._convert(hsv[..., 1], alpha=_uniform(*self.saturation_range))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if _randint(0, 2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(int) + _randint(-self.hue_delta, self.hue_delta)) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if not contrast_first:
            img = self._contrast(img)
        return dict(sample, image=tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)))


class RandomCropRange:
    """mmdet ``RandomCrop``: a window of min(h, size[0]) x min(w, size[1]) ("absolute"), or with ``size_range`` =
    (lo, hi) one whose height and width are each a uniform integer in [min(side, lo), min(side, hi)]
    ("absolute_range"), at a uniform position. Boxes are shifted and clipped to the window; the mapper drops those
    left empty and keeps a crop that lost every box (mmdet ``allow_negative_crop=True``)."""

    def __init__(self, size: tuple[int, int] = (), size_range: tuple[int, int] = ()):
        if bool(size) == bool(size_range):
            raise ValueError("RandomCropRange crops a `size` window or one of sides in `size_range`: give one of them")
        if size_range and (len(size_range) != 2 or size_range[0] > size_range[1]):
            raise ValueError(f"INPUT.CROP.SIZE_RANGE must be (min, max), got {tuple(size_range)}")
        self.size, self.size_range = tuple(int(v) for v in size), tuple(int(v) for v in size_range)

    def __call__(self, sample: dict) -> dict:
        h, w = _size(sample)
        if self.size:
            ch, cw = min(self.size[0], h), min(self.size[1], w)
        else:
            lo, hi = self.size_range
            ch = _randint(min(h, lo), min(h, hi) + 1)
            cw = _randint(min(w, lo), min(w, hi) + 1)
        top, left = _randint(0, h - ch + 1), _randint(0, w - cw + 1)
        return {k: TF.crop(v, top, left, ch, cw) for k, v in sample.items()}


class RandomEither:
    """``first`` with probability ``prob``, else ``second`` (mmdet ``AutoAugment`` over two policies: prob 0.5)."""

    def __init__(self, first: Compose, second: Compose, prob: float):
        self.first, self.second, self.prob = first, second, prob

    def __call__(self, sample: dict) -> dict:
        return self.first(sample) if _uniform(0, 1) < self.prob else self.second(sample)


class ResizeScale:
    """Detectron2 ``ResizeScale`` (large-scale jitter): draw s in [min_scale, max_scale) and keep-ratio resize the
    image to fit (target_height * s, target_width * s), sizes rounded."""

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int,
                 backend: str = "torchvision"):
        self.min_scale, self.max_scale, self.target = min_scale, max_scale, (target_height, target_width)
        self.backend = _check_backend(backend)

    def __call__(self, sample: dict) -> dict:
        s = _uniform(self.min_scale, self.max_scale)
        h, w = _size(sample)
        scale = min(self.target[0] * s / h, self.target[1] * s / w)
        return resize_sample(sample, int(np.round(h * scale)), int(np.round(w * scale)), self.backend)


class FixedSizeCrop:
    """Detectron2 ``FixedSizeCrop(pad=True)``: a random crop_size window (one uniform draw places it along both
    axes), then padding at the bottom/right up to crop_size: image with 128, ``sem_seg`` with ``ignore_label``,
    masks with 0."""

    def __init__(self, crop_size: tuple[int, int], ignore_label: int = 255, pad_value: int = 128):
        self.crop_size, self.ignore_label, self.pad_value = tuple(crop_size), ignore_label, pad_value

    def __call__(self, sample: dict) -> dict:
        h, w = _size(sample)
        ch, cw = self.crop_size
        u = _uniform(0.0, 1.0)
        top, left = int(np.round(max(h - ch, 0) * u)), int(np.round(max(w - cw, 0) * u))
        out = {k: TF.crop(v, top, left, min(ch, h), min(cw, w)) for k, v in sample.items()}
        ph, pw = ch - min(ch, h), cw - min(cw, w)
        if ph or pw:
            fill = {"image": self.pad_value, "sem_seg": self.ignore_label}
            out = {k: TF.pad(v, [0, 0, pw, ph], fill=fill.get(k, 0)) for k, v in out.items()}
        return out


def build_lsj_transforms(cfg) -> Compose:
    """Mask2Former's COCO large-scale jitter: flip, ResizeScale(INPUT.MIN_SCALE, INPUT.MAX_SCALE, INPUT.IMAGE_SIZE),
    FixedSizeCrop(INPUT.IMAGE_SIZE) (training only)."""
    inp = cfg.INPUT
    augs = [RandomFlip(inp.FLIP_PROB)] if inp.FLIP_PROB > 0 else []
    augs += [ResizeScale(inp.MIN_SCALE, inp.MAX_SCALE, inp.IMAGE_SIZE, inp.IMAGE_SIZE, inp.RESIZE_BACKEND),
             FixedSizeCrop((inp.IMAGE_SIZE, inp.IMAGE_SIZE), cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)]
    return Compose(augs)


def _train_resize(inp):
    """The training resize named by INPUT.MIN_SIZE_TRAIN_SAMPLING."""
    if inp.MIN_SIZE_TRAIN_SAMPLING == "ratio_range":
        if len(inp.MIN_SIZE_TRAIN) != 1:
            raise ValueError("INPUT.MIN_SIZE_TRAIN must hold one size with MIN_SIZE_TRAIN_SAMPLING 'ratio_range'")
        return ResizeRatioRange(inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN[0], tuple(inp.RESIZE_RATIO_RANGE),
                                inp.RESIZE_BACKEND)
    return ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING, inp.RESIZE_BACKEND)


def _test_resize(inp) -> Compose:
    """mmcv.imrescale's keep-ratio rule to fit (MAX_SIZE_TEST, MIN_SIZE_TEST), resized by INPUT.RESIZE_BACKEND
    (then up to a multiple of INPUT.TEST_RESIZE_MULTIPLE when set)."""
    augs = [ResizeShortestEdge((inp.MIN_SIZE_TEST,), inp.MAX_SIZE_TEST, backend=inp.RESIZE_BACKEND)] \
        if inp.MIN_SIZE_TEST > 0 else []
    if inp.TEST_RESIZE_MULTIPLE > 0:
        augs.append(ResizeToMultiple(inp.TEST_RESIZE_MULTIPLE, inp.RESIZE_BACKEND))
    return Compose(augs)


def build_transforms(cfg, is_train: bool) -> Compose:
    """The semantic-segmentation pipeline named by cfg.INPUT for training (mmseg: resize, crop with
    CAT_MAX_RATIO, flip, photometric distortion), or the test-time resize."""
    inp = cfg.INPUT
    if not is_train:
        return _test_resize(inp)
    augs = [_train_resize(inp)]
    if inp.CROP.ENABLED:
        if inp.CROP.SIZE_RANGE:
            raise ValueError("INPUT.CROP.SIZE_RANGE is for the detection mapper; semantic pipelines crop an "
                             "INPUT.CROP.SIZE window: set INPUT.CROP.SIZE_RANGE ()")
        augs.append(RandomCropCatMax(inp.CROP.SIZE, inp.CROP.CAT_MAX_RATIO, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE))
    if inp.FLIP_PROB > 0:
        augs.append(RandomFlip(inp.FLIP_PROB))
    if inp.COLOR_AUG:
        augs.append(PhotoMetricDistortion())
    return Compose(augs)


def build_detection_transforms(cfg, is_train: bool) -> Compose:
    """The detection pipelines of the papers' mmdet configs, from cfg.INPUT, or the test-time resize.

    Training: flip (FLIP_PROB), then the resize (MIN_SIZE_TRAIN, MAX_SIZE_TRAIN: single-scale 1333 x 800 or the
    multi-scale short side 480-800 step 32); with CROP.ENABLED, DETR-style AutoAugment: with probability CROP.PROB
    the image is first resized to a short side from CROP.RESIZE_BEFORE and randomly cropped (a CROP.SIZE window, or
    with CROP.SIZE_RANGE one of sides drawn from that range)
    before that resize; last, a random crop to at most FINAL_CROP_SIZE (ViT-Adapter's 1024 x 1024) when set.
    """
    inp = cfg.INPUT
    if not is_train:
        return _test_resize(inp)
    augs = [RandomFlip(inp.FLIP_PROB)] if inp.FLIP_PROB > 0 else []
    resize = _train_resize(inp)
    if inp.CROP.ENABLED:
        crop = [ResizeShortestEdge(inp.CROP.RESIZE_BEFORE, inp.MAX_SIZE_TRAIN, backend=inp.RESIZE_BACKEND)
                ] if inp.CROP.RESIZE_BEFORE else []
        size = () if inp.CROP.SIZE_RANGE else inp.CROP.SIZE
        crop += [RandomCropRange(size, inp.CROP.SIZE_RANGE), resize]
        augs.append(RandomEither(Compose(crop), Compose([resize]), inp.CROP.PROB))
    else:
        augs.append(resize)
    if inp.FINAL_CROP_SIZE:
        augs.append(RandomCropRange(inp.FINAL_CROP_SIZE))
    return Compose(augs)
