"""dense backbones inside a Detectron2 installation (Detectron2 is not on PyPI: build it from source).

Importing this module registers, for every dense backbone family ``f`` (dat, davit, vit_adapter, dsan), into
``detectron2.modeling.BACKBONE_REGISTRY``:

- ``build_f_backbone``: the dense backbone as a Detectron2 ``Backbone`` (res2..res5, ``output_shape`` with
  Detectron2's ShapeSpec, ``size_divisibility``, ``padding_constraints``), e.g. for Mask2Former;
- ``build_f_fpn_backbone``: wrapped in Detectron2's FPN (p2..p6, max-pooled P6) for GeneralizedRCNN and
  SemanticSegmentor;
- ``build_f_retinanet_fpn_backbone``: wrapped in Detectron2's FPN with P6/P7 from res5, for RetinaNet.

``add_dense_config(cfg)`` adds the backbones' config nodes (``MODEL.DAT``, ``MODEL.DAVIT``,
``MODEL.VIT_ADAPTER``, ``MODEL.DSAN`` with dense's defaults, the tiny variants) to a Detectron2 CfgNode::

    import dense.compat.detectron2  # noqa: F401  (registers the backbones)
    from dense.compat.detectron2 import add_dense_config
    cfg = get_cfg(); add_dense_config(cfg); cfg.merge_from_file("my_config.yaml")

Weights: ``tools/convert_checkpoint.py --format detectron2`` writes a released (or dense) checkpoint as a file
Detectron2's ``DetectionCheckpointer`` loads into any of these wrappers.
"""
from __future__ import annotations

try:
    from detectron2.modeling import BACKBONE_REGISTRY as D2_BACKBONE_REGISTRY
    from detectron2.modeling import Backbone as D2Backbone
    from detectron2.modeling import ShapeSpec as D2ShapeSpec
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
except ImportError as e:  # pragma: no cover - exercised only without Detectron2
    raise ImportError(
        "dense.compat.detectron2 needs Detectron2, which is not on PyPI: build it from source "
        "(git clone https://github.com/facebookresearch/detectron2 && pip install --no-build-isolation -e detectron2)"
    ) from e

from torch import nn

from ..config import get_cfg as dense_get_cfg
from ..modeling.backbone import BACKBONE_REGISTRY as DENSE_BACKBONE_REGISTRY
from ..modeling.backbone import Backbone as DenseBackboneBase
from ..modeling.backbone import ShapeSpec as DenseShapeSpec

__all__ = ["DenseBackbone", "add_dense_config", "unwrap", "FAMILIES", "CONFIG_PREFIX"]

# Detectron2 registry name stem -> (dense BACKBONE_REGISTRY name, config node under MODEL)
FAMILIES = {"dat": ("DAT", "DAT"), "davit": ("DaViT", "DAVIT"), "vit_adapter": ("ViTAdapter", "VIT_ADAPTER"),
            "dsan": ("DSAN", "DSAN")}
CONFIG_PREFIX = "body."  # key prefix of the dense weights inside DenseBackbone (see convert_checkpoint.py)


class DenseBackbone(D2Backbone):
    """A dense backbone as a Detectron2 ``Backbone``; the dense module (and its weights) lives in ``body``."""

    def __init__(self, body: DenseBackboneBase):
        super().__init__()
        self.body = body
        self._out_features = list(body._out_features)
        self._out_feature_channels = {k: v.channels for k, v in body.output_shape().items()}
        self._out_feature_strides = {k: v.stride for k, v in body.output_shape().items()}

    def forward(self, x):
        return self.body(x)

    def output_shape(self):
        return {k: D2ShapeSpec(channels=v.channels, stride=v.stride) for k, v in self.body.output_shape().items()}

    @property
    def size_divisibility(self) -> int:
        return self.body.size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self.body.size_divisibility, "square_size": 0}


def add_dense_config(cfg) -> None:
    """Add dense's backbone config nodes (with dense's defaults) and MODEL.BACKBONE.OUT_FEATURES to a
    Detectron2 CfgNode. Keys already present are left alone."""
    defaults = dense_get_cfg()
    for _, node in FAMILIES.values():
        if node not in cfg.MODEL:
            cfg.MODEL[node] = defaults.MODEL[node].clone()
    if "OUT_FEATURES" not in cfg.MODEL.BACKBONE:
        cfg.MODEL.BACKBONE.OUT_FEATURES = list(defaults.MODEL.BACKBONE.OUT_FEATURES)


def _body(cfg, family: str, input_shape) -> DenseBackbone:
    dense_name, _ = FAMILIES[family]
    cls = DENSE_BACKBONE_REGISTRY.get(dense_name)
    return DenseBackbone(cls.from_config(cfg, DenseShapeSpec(channels=input_shape.channels)))


def _register(family: str) -> None:
    def build(cfg, input_shape) -> D2Backbone:
        return _body(cfg, family, input_shape)

    def build_fpn(cfg, input_shape) -> D2Backbone:
        return FPN(bottom_up=_body(cfg, family, input_shape), in_features=cfg.MODEL.FPN.IN_FEATURES,
                   out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
                   fuse_type=cfg.MODEL.FPN.FUSE_TYPE)

    def build_retinanet_fpn(cfg, input_shape) -> D2Backbone:
        bottom_up = _body(cfg, family, input_shape)
        c5 = bottom_up.output_shape()["res5"].channels
        return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
                   norm=cfg.MODEL.FPN.NORM, top_block=LastLevelP6P7(c5, cfg.MODEL.FPN.OUT_CHANNELS),
                   fuse_type=cfg.MODEL.FPN.FUSE_TYPE)

    for suffix, fn in (("backbone", build), ("fpn_backbone", build_fpn), ("retinanet_fpn_backbone", build_retinanet_fpn)):
        name = f"build_{family}_{suffix}"
        if name not in D2_BACKBONE_REGISTRY:
            fn.__name__ = name
            D2_BACKBONE_REGISTRY._do_register(name, fn)


for _family in FAMILIES:
    _register(_family)


def unwrap(module: nn.Module) -> DenseBackboneBase:
    """The dense backbone inside a Detectron2 backbone built by this module (plain or FPN-wrapped)."""
    bottom_up = getattr(module, "bottom_up", module)
    return bottom_up.body
