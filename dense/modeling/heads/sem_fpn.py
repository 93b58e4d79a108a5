"""Semantic FPN head (Kirillov et al. 2019) as mmseg's ``FPNHead``; used after the FPN neck."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..backbone.backbone import ShapeSpec
from ..layers import ConvNormAct, Upsample, resize
from .build import SEM_SEG_HEAD_REGISTRY, DecodeHead, head_config

__all__ = ["FPNHead"]


@SEM_SEG_HEAD_REGISTRY.register()
class FPNHead(DecodeHead):
    """For each pyramid level i (stride s_i): max(1, log2(s_i / s_0)) x [3x3 ConvNormAct + 2x bilinear
    upsample (when s_i != s_0)] -> sum at stride s_0 -> dropout -> conv_seg.

    Keys as mmseg: ``scale_heads.{i}.{j}.conv/bn`` (upsample modules hold no parameters), ``conv_seg``.
    """

    def __init__(self, input_shape: dict[str, ShapeSpec], in_features: list[str], channels: int, num_classes: int,
                 norm: str = "BN", **kwargs):
        super().__init__(in_features, channels, num_classes, **kwargs)
        strides = [input_shape[f].stride for f in in_features]
        self.common_stride = strides[0]
        self.scale_heads = nn.ModuleList()
        for f, stride in zip(in_features, strides):
            layers: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(strides[0])))):
                c_in = input_shape[f].channels if k == 0 else channels
                layers.append(ConvNormAct(c_in, channels, 3, padding=1, norm=norm))
                if stride != strides[0]:
                    layers.append(Upsample(2, "bilinear", self.align_corners))
            self.scale_heads.append(nn.Sequential(*layers))

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], node=None) -> FPNHead:
        return cls(input_shape, **head_config(cfg, node or cfg.MODEL.SEM_SEG_HEAD))

    def layers(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:]):
            out = out + resize(head(x), out.shape[-2:], "bilinear", self.align_corners)
        return out
