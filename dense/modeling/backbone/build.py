"""BACKBONE_REGISTRY and build_backbone."""
from __future__ import annotations

from fvcore.common.registry import Registry

from ..registry_utils import build_from_registry
from .backbone import Backbone, ShapeSpec

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry of backbones. A registered object is a Backbone subclass with a classmethod
``from_config(cfg, input_shape: ShapeSpec)`` (or a function ``(cfg, input_shape) -> Backbone``),
selected by ``cfg.MODEL.BACKBONE.NAME``.
"""


def build_backbone(cfg, input_shape: ShapeSpec | None = None) -> Backbone:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME`` (input: 3-channel images)."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = build_from_registry(BACKBONE_REGISTRY, cfg.MODEL.BACKBONE.NAME, "MODEL.BACKBONE.NAME", cfg, input_shape)
    assert isinstance(backbone, Backbone), f"{cfg.MODEL.BACKBONE.NAME} must return a dense Backbone"
    return backbone
