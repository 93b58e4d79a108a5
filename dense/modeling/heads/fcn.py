"""FCN head (Long et al. 2015) as mmseg's ``FCNHead``; the papers use it as UperNet's auxiliary head."""
from __future__ import annotations

import torch
from torch import nn

from ..backbone.backbone import ShapeSpec
from ..layers import ConvNormAct
from .build import SEM_SEG_HEAD_REGISTRY, DecodeHead, head_config

__all__ = ["FCNHead"]


@SEM_SEG_HEAD_REGISTRY.register()
class FCNHead(DecodeHead):
    """``num_convs`` x [k x k ConvNormAct] on one level (optionally concatenated with the input and fused by
    another k x k conv) -> dropout -> conv_seg. Keys ``convs.{i}.conv/bn``, ``conv_cat``, ``conv_seg``."""

    def __init__(self, input_shape: dict[str, ShapeSpec], in_features: list[str], channels: int, num_classes: int,
                 num_convs: int = 2, kernel_size: int = 3, concat_input: bool = True, norm: str = "BN", **kwargs):
        super().__init__(in_features, channels, num_classes, **kwargs)
        if len(in_features) != 1:
            raise ValueError(f"FCNHead reads one feature map, got IN_FEATURES {in_features}")
        c_in = input_shape[in_features[0]].channels
        self.common_stride = input_shape[in_features[0]].stride
        pad = kernel_size // 2
        self.convs = nn.Sequential(*(ConvNormAct(c_in if i == 0 else channels, channels, kernel_size, padding=pad,
                                                 norm=norm) for i in range(num_convs)))
        self.conv_cat = (ConvNormAct(c_in + channels, channels, kernel_size, padding=pad, norm=norm) if concat_input
                         else None)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], node=None) -> FCNHead:
        node = node or cfg.MODEL.SEM_SEG_HEAD
        return cls(input_shape, num_convs=node.NUM_CONVS, kernel_size=3, concat_input=node.CONCAT_INPUT,
                   **head_config(cfg, node))

    def layers(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.convs(features[0])
        if self.conv_cat is not None:
            x = self.conv_cat(torch.cat([features[0], x], dim=1))
        return x
