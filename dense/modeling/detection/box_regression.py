"""Box deltas and their loss.

Deltas are torchvision's ``BoxCoder`` (dx, dy, dw, dh) * weights, which is mmdetection's ``DeltaXYWHBBoxCoder``
with ``target_means`` 0 and ``target_stds`` = 1 / weights (RPN / RetinaNet 1, R-CNN 0.1, 0.1, 0.2, 0.2 =
weights 10, 10, 5, 5), widths x2 - x1 without mmdet 1.x's +1, dw / dh clamped at log(1000 / 16) before exp.
(mmdet also clamps dw / dh from below at -log(1000 / 16); torchvision does not: this only changes boxes
predicted 60 times smaller than their anchor.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder

__all__ = ["BoxCoder", "box_regression_loss"]


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Sum over all elements of smooth-L1 with ``beta`` (torchvision: 1/9), or L1 when ``beta`` is 0 (mmdet's
    L1Loss, Detectron2's default). The caller divides by its normaliser."""
    if beta < 1e-5:  # smooth-L1's quadratic zone vanishes: plain L1
        return (pred - target).abs().sum()
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
