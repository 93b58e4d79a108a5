"""dense backbones inside a Detectron2 installation (Detectron2 is not on PyPI: build it from source).

Importing this module registers every backbone family of dense's BACKBONE_REGISTRY (its own, not a list kept
here) whose config node Detectron2 lacks (ResNet is skipped: Detectron2 has its own) into
``detectron2.modeling.BACKBONE_REGISTRY``, ``f`` being the family's config node in lower case (dat, davit,
vit_adapter, dsan):

- ``build_f_backbone``: the dense backbone as a Detectron2 ``Backbone`` (res2..res5, ``output_shape`` with
  Detectron2's ShapeSpec, ``size_divisibility``, ``padding_constraints``), e.g. for Mask2Former;
- ``build_f_fpn_backbone``: wrapped in Detectron2's FPN (p2..p6, max-pooled P6) for GeneralizedRCNN and
  SemanticSegmentor;
- ``build_f_retinanet_fpn_backbone``: wrapped in Detectron2's FPN with P6/P7 from res5, for RetinaNet.

:func:`register_backbones` does the same again for backbones registered in dense later (e.g. your own).
``add_dense_config(cfg)`` adds the families' config nodes (``MODEL.DAT``, ``MODEL.DAVIT``, ``MODEL.VIT_ADAPTER``,
``MODEL.DSAN``, ... with dense's defaults, the tiny variants) to a Detectron2 CfgNode::

    import dense.compat.detectron2  # noqa: F401  (registers the backbones)
    from dense.compat.detectron2 import add_dense_config
    cfg = get_cfg(); add_dense_config(cfg); cfg.merge_from_file("my_config.yaml")

Weights: ``tools/convert_checkpoint.py --format detectron2`` writes a released (or dense) checkpoint as a file
Detectron2's ``DetectionCheckpointer`` loads into any of these wrappers.
"""
from __future__ import annotations

try:
    from detectron2.config import get_cfg as d2_get_cfg
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

from ..config.config import CfgNode as DenseCfgNode
from ..modeling.backbone import BACKBONE_REGISTRY as DENSE_BACKBONE_REGISTRY
from ..modeling.backbone import Backbone as DenseBackboneBase
from ..modeling.backbone import ShapeSpec as DenseShapeSpec

__all__ = ["DenseBackbone", "add_dense_config", "families", "register_backbones", "unwrap", "CONFIG_PREFIX"]

CONFIG_PREFIX = "body."  # key prefix of the dense weights inside DenseBackbone (see convert_checkpoint.py)
_DETECTRON2_NODES = frozenset(d2_get_cfg().MODEL)  # config nodes Detectron2 has itself (RESNETS, FPN, ...)


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


def _config_nodes(backbone: type) -> DenseCfgNode:
    """The nodes under MODEL that a dense backbone family's ``add_config`` adds, with their defaults."""
    scratch = DenseCfgNode()
    scratch.MODEL = DenseCfgNode()
    backbone.add_config(scratch)
    return scratch.MODEL


def families() -> dict[str, tuple[type, DenseCfgNode]]:
    """{family: (dense backbone class, its config nodes with their defaults)} for every backbone of dense's
    BACKBONE_REGISTRY whose config node Detectron2 lacks; ``family`` is the node's name in lower case."""
    found = {}
    for _, backbone in sorted(DENSE_BACKBONE_REGISTRY):
        if getattr(backbone, "add_config", None) is None:
            continue
        nodes = _config_nodes(backbone)
        if nodes and not set(nodes) & _DETECTRON2_NODES:
            found[next(iter(nodes)).lower()] = (backbone, nodes)
    return found


def add_dense_config(cfg) -> None:
    """Add the config nodes of dense's backbone families (with dense's defaults) and MODEL.BACKBONE.OUT_FEATURES to a
    Detectron2 CfgNode. Keys already present are left alone. The nodes become the config's own CfgNode class, so that
    YAML files merge into them."""
    for _, nodes in families().values():
        for name, node in nodes.items():
            if name not in cfg.MODEL:
                cfg.MODEL[name] = type(cfg)(node)
    if "OUT_FEATURES" not in cfg.MODEL.BACKBONE:
        cfg.MODEL.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]


def _register(family: str, backbone: type) -> None:
    def build(cfg, input_shape) -> D2Backbone:
        return DenseBackbone(backbone.from_config(cfg, DenseShapeSpec(channels=input_shape.channels)))

    def build_fpn(cfg, input_shape) -> D2Backbone:
        return FPN(bottom_up=build(cfg, input_shape), in_features=cfg.MODEL.FPN.IN_FEATURES,
                   out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
                   fuse_type=cfg.MODEL.FPN.FUSE_TYPE)

    def build_retinanet_fpn(cfg, input_shape) -> D2Backbone:
        bottom_up = build(cfg, input_shape)
        c5 = bottom_up.output_shape()["res5"].channels
        return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
                   norm=cfg.MODEL.FPN.NORM, top_block=LastLevelP6P7(c5, cfg.MODEL.FPN.OUT_CHANNELS),
                   fuse_type=cfg.MODEL.FPN.FUSE_TYPE)

    for suffix, fn in (("backbone", build), ("fpn_backbone", build_fpn),
                       ("retinanet_fpn_backbone", build_retinanet_fpn)):
        name = f"build_{family}_{suffix}"
        if name not in D2_BACKBONE_REGISTRY:
            fn.__name__ = name
            D2_BACKBONE_REGISTRY._do_register(name, fn)


def register_backbones() -> None:
    """Register every dense backbone family (:func:`families`) into Detectron2's BACKBONE_REGISTRY; names already
    there are left alone. Runs at import; call it again after registering a backbone in dense."""
    for family, (backbone, _) in families().items():
        _register(family, backbone)


register_backbones()


def unwrap(module: nn.Module) -> DenseBackboneBase:
    """The dense backbone inside a Detectron2 backbone built by this module (plain or FPN-wrapped)."""
    bottom_up = getattr(module, "bottom_up", module)
    return bottom_up.body
