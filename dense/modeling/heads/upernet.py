"""UperNet head (Xiao et al. 2018) as mmseg's ``UPerHead``: a pyramid pooling module on the last level
plus an FPN that fuses all levels."""
from __future__ import annotations

import torch
from torch import nn

from ..backbone.backbone import ShapeSpec
from ..layers import AdaptiveAvgPool2d, ConvNormAct, resize
from .build import SEM_SEG_HEAD_REGISTRY, DecodeHead, head_config

__all__ = ["UPerHead", "PPM"]


class PPM(nn.ModuleList):
    """Pyramid pooling: for each scale s, adaptive average pool to s x s -> 1x1 ConvNormAct -> upsample back.
    Keys ``{i}.1.conv`` / ``{i}.1.bn`` (index 0 is the parameter-free pool), as mmseg."""

    def __init__(self, pool_scales: tuple[int, ...], in_channels: int, channels: int, norm: str, align_corners: bool):
        super().__init__(nn.Sequential(AdaptiveAvgPool2d(s), ConvNormAct(in_channels, channels, 1, norm=norm))
                         for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize(m(x), x.shape[-2:], "bilinear", self.align_corners) for m in self]


@SEM_SEG_HEAD_REGISTRY.register()
class UPerHead(DecodeHead):
    """Input: levels ``in_features`` (e.g. res2..res5). The last level goes through PPM + a 3x3 bottleneck;
    lateral 1x1 convs and a top-down pathway (bilinear) fuse every level; each fused level but the last gets
    a 3x3 conv; all are upsampled to the first level's size, concatenated and fused by a 3x3
    ``fpn_bottleneck`` -> dropout -> conv_seg. Logits at the first level's stride.
    """

    def __init__(self, input_shape: dict[str, ShapeSpec], in_features: list[str], channels: int, num_classes: int,
                 pool_scales=(1, 2, 3, 6), norm: str = "BN", **kwargs):
        super().__init__(in_features, channels, num_classes, **kwargs)
        in_channels = [input_shape[f].channels for f in in_features]
        self.common_stride = input_shape[in_features[0]].stride
        self.psp_modules = PPM(tuple(pool_scales), in_channels[-1], channels, norm, self.align_corners)
        self.bottleneck = ConvNormAct(in_channels[-1] + len(pool_scales) * channels, channels, 3, padding=1, norm=norm)
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, channels, 1, norm=norm) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3, padding=1, norm=norm)
                                       for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvNormAct(len(in_channels) * channels, channels, 3, padding=1, norm=norm)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], node=None) -> UPerHead:
        node = node or cfg.MODEL.SEM_SEG_HEAD
        return cls(input_shape, pool_scales=tuple(cfg.MODEL.SEM_SEG_HEAD.POOL_SCALES), **head_config(cfg, node))

    def layers(self, features: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features[:-1])]
        top = features[-1]
        laterals.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:], "bilinear",
                                                       self.align_corners)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [resize(x, size, "bilinear", self.align_corners) for x in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))
