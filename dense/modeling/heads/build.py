"""SEM_SEG_HEAD_REGISTRY and the shared base of mmseg-style decode heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from fvcore.common.registry import Registry
from torch import nn

from ..backbone.backbone import ShapeSpec
from ..layers import resize
from ..registry_utils import build_from_registry

__all__ = ["SEM_SEG_HEAD_REGISTRY", "build_sem_seg_head", "build_aux_head", "head_config", "DecodeHead"]

SEM_SEG_HEAD_REGISTRY = Registry("SEM_SEG_HEAD")
SEM_SEG_HEAD_REGISTRY.__doc__ = """
Registry of semantic segmentation heads: ``from_config(cfg, input_shape: dict[str, ShapeSpec])``.
A head maps a feature dict to class logits [N, K, H/s, W/s] and computes its loss with ``losses``.
"""


def build_sem_seg_head(cfg, input_shape: dict[str, ShapeSpec]) -> DecodeHead:
    """The decode head named by MODEL.SEM_SEG_HEAD.NAME."""
    return build_from_registry(SEM_SEG_HEAD_REGISTRY, cfg.MODEL.SEM_SEG_HEAD.NAME, "MODEL.SEM_SEG_HEAD.NAME",
                               cfg, input_shape)


def build_aux_head(cfg, input_shape: dict[str, ShapeSpec]) -> DecodeHead | None:
    """The auxiliary head named by MODEL.AUX_HEAD.NAME (configured by the MODEL.AUX_HEAD node), or None."""
    if not cfg.MODEL.AUX_HEAD.NAME:
        return None
    return build_from_registry(SEM_SEG_HEAD_REGISTRY, cfg.MODEL.AUX_HEAD.NAME, "MODEL.AUX_HEAD.NAME",
                               cfg, input_shape, cfg.MODEL.AUX_HEAD)


def head_config(cfg, node) -> dict:
    """Constructor arguments every decode head shares, from a head node (MODEL.SEM_SEG_HEAD or
    MODEL.AUX_HEAD); the class count and ignore value always come from MODEL.SEM_SEG_HEAD."""
    return dict(in_features=list(node.IN_FEATURES), channels=node.CONVS_DIM,
                num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, norm=node.NORM, dropout=node.DROPOUT,
                ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE, loss_weight=node.LOSS_WEIGHT)


class DecodeHead(nn.Module):
    """mmseg BaseDecodeHead: features -> ``channels`` -> Dropout2d -> 1x1 ``conv_seg`` -> logits.

    Subclasses implement ``layers(features) -> [N, channels, H/s, W/s]``. ``losses`` upsamples the
    logits bilinearly to the label size and applies cross-entropy (mean over non-ignored pixels).
    """

    def __init__(self, in_features: list[str], channels: int, num_classes: int, dropout: float = 0.1,
                 ignore_value: int = 255, loss_weight: float = 1.0, align_corners: bool = False):
        super().__init__()
        self.in_features = list(in_features)
        self.num_classes, self.ignore_value = num_classes, ignore_value
        self.loss_weight, self.align_corners = loss_weight, align_corners
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def layers(self, features: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.layers([features[f] for f in self.in_features])
        if self.dropout is not None:
            x = self.dropout(x)
        return self.conv_seg(x)

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weighted cross-entropy of ``logits`` [N, K, h, w] against ``targets`` [N, H, W]."""
        logits = resize(logits.float(), targets.shape[-2:], "bilinear", self.align_corners)
        return F.cross_entropy(logits, targets, ignore_index=self.ignore_value) * self.loss_weight
