"""The Mask R-CNN mask branch as mmdetection's ``FCNMaskHead``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNormAct

__all__ = ["FCNMaskHead"]


class FCNMaskHead(nn.Module):
    """``num_convs`` 3x3 conv + ReLU (``convs.i.conv``, mmcv ConvModule names), a 2x2 stride-2 transposed conv +
    ReLU (``upsample``) and a 1x1 conv to one mask per class (``conv_logits``).

    ``forward(roi features [R, C, S, S])`` -> mask logits [R, K, 2S, 2S]. Init as mmdet: Kaiming normal (fan_out,
    ReLU) weights, zero biases.
    """

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 256, num_convs: int = 4):
        super().__init__()
        self.convs = nn.ModuleList(ConvNormAct(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1)
                                   for i in range(num_convs))
        width = conv_dim if num_convs else in_channels
        self.upsample = nn.ConvTranspose2d(width, conv_dim, 2, stride=2)
        self.conv_logits = nn.Conv2d(conv_dim, num_classes, 1)
        for m in [*(c.conv for c in self.convs), self.upsample, self.conv_logits]:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(F.relu(self.upsample(x)))
