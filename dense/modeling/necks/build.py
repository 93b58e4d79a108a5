"""NECK_REGISTRY: modules between the backbone and the heads (FPN)."""
from __future__ import annotations

from fvcore.common.registry import Registry

from ..backbone.backbone import ShapeSpec
from ..registry_utils import build_from_registry

NECK_REGISTRY = Registry("NECK")
NECK_REGISTRY.__doc__ = """
Registry of necks: ``from_config(cfg, input_shape: dict[str, ShapeSpec])`` returns a module mapping the
backbone's feature dict to a new feature dict and exposing ``output_shape()``.
"""


def build_neck(cfg, input_shape: dict[str, ShapeSpec]):
    """The neck named by ``cfg.MODEL.NECK.NAME``, or None when the name is empty."""
    if not cfg.MODEL.NECK.NAME:
        return None
    return build_from_registry(NECK_REGISTRY, cfg.MODEL.NECK.NAME, "MODEL.NECK.NAME", cfg, input_shape)
