"""Instance masks: cropping bitmaps into RoI targets and pasting RoI mask predictions back into an image.

Both follow mmdetection 2.x and Detectron2 (not torchvision, whose paste expands the box and resizes):
targets are RoIAlign (aligned, adaptive sampling) of the bitmap, pasting is a bilinear ``grid_sample`` of the
M x M prediction at the centres of the image pixels the box covers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = ["crop_and_resize", "paste_masks_in_image"]

# pasting on a GPU works on chunks of masks whose float images stay under this many bytes
_GPU_PASTE_BYTES = 1 << 30


def crop_and_resize(masks: torch.Tensor, boxes: torch.Tensor, indices: torch.Tensor, size: int) -> torch.Tensor:
    """The region ``boxes[r]`` of mask ``masks[indices[r]]``, resampled to ``size`` x ``size``.

    Args:
        masks: bool or float [G, H, W] bitmaps.
        boxes: float [R, 4] XYXY in the masks' pixel coordinates.
        indices: int64 [R], the mask each box crops.
    Returns:
        float [R, size, size] in [0, 1] (binarise with >= 0.5 for mmdet's targets).
    """
    if len(boxes) == 0:
        return masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat([indices[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(masks[:, None].float(), rois.float(), (size, size), spatial_scale=1.0, sampling_ratio=0,
                     aligned=True)[:, 0]


def _paste_chunk(masks: torch.Tensor, boxes: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
    """Masks [n, M, M] resampled at the centres of the pixels of ``region`` (x0, y0, x1, y1) -> [n, y1-y0, x1-x0]."""
    x0r, y0r, x1r, y1r = region
    x0, y0, x1, y1 = boxes.split(1, dim=1)  # [n, 1] each
    ys = torch.arange(y0r, y1r, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(x0r, x1r, device=masks.device, dtype=torch.float32) + 0.5
    gy = (ys[None] - y0) / (y1 - y0).clamp(min=1e-6) * 2 - 1  # [n, h]
    gx = (xs[None] - x0) / (x1 - x0).clamp(min=1e-6) * 2 - 1  # [n, w]
    grid = torch.stack([gx[:, None, :].expand(-1, len(ys), -1), gy[:, :, None].expand(-1, -1, len(xs))], dim=3)
    return F.grid_sample(masks[:, None].float(), grid, align_corners=False)[:, 0]


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                         threshold: float = 0.5) -> torch.Tensor:
    """Paste RoI mask probabilities into full images (mmdet ``_do_paste_mask`` / Detectron2 ``paste_masks_in_image``).

    Pixel (i, j) of the image (centre (j + 0.5, i + 0.5)) takes the bilinear sample of the mask at that point's
    position inside its box, the mask spanning the box exactly; outside the box the value is 0.

    Args:
        masks: float [N, M, M] probabilities.
        boxes: float [N, 4] XYXY in the target image's pixels.
        image_size: (H, W) of the target image.
        threshold: probabilities >= threshold are foreground.
    Returns:
        bool [N, H, W].
    """
    height, width = image_size
    out = torch.zeros((len(masks), height, width), dtype=torch.bool, device=masks.device)
    if len(masks) == 0:
        return out
    boxes = boxes.float()
    if masks.device.type == "cpu":
        # one mask at a time, only over its box (+1 px): the cost is the box area, not the image area
        for k in range(len(masks)):
            b = boxes[k]
            x0, y0 = (int(max(float(v) - 1, 0)) for v in b[:2].floor())
            x1 = int(min(float(b[2].ceil()) + 1, width))
            y1 = int(min(float(b[3].ceil()) + 1, height))
            if x1 <= x0 or y1 <= y0:
                continue
            out[k, y0:y1, x0:x1] = _paste_chunk(masks[k: k + 1], b[None], (x0, y0, x1, y1))[0] >= threshold
        return out
    chunk = max(1, _GPU_PASTE_BYTES // (height * width * 4))
    for start in range(0, len(masks), chunk):
        sl = slice(start, start + chunk)
        out[sl] = _paste_chunk(masks[sl], boxes[sl], (0, 0, width, height)) >= threshold
    return out
