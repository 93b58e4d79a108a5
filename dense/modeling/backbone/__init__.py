from .backbone import Backbone, ShapeSpec
from .build import BACKBONE_REGISTRY, build_backbone
from .dat import DAT
from .davit import DaViT
from .dsan import DSAN
from .resnet import ResNet
from .vit_adapter import ViTAdapter

__all__ = ["Backbone", "ShapeSpec", "BACKBONE_REGISTRY", "build_backbone", "DAT", "DaViT", "DSAN", "ResNet",
           "ViTAdapter"]
