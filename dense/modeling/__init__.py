"""Models: backbones, necks, heads and meta-architectures, each selected through a registry."""
from .backbone import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone
from .heads import SEM_SEG_HEAD_REGISTRY, build_sem_seg_head
from .meta_arch import META_ARCH_REGISTRY, build_model
from .necks import NECK_REGISTRY, build_neck
from .registry_utils import ArgumentError, build_from_node

__all__ = ["BACKBONE_REGISTRY", "Backbone", "ShapeSpec", "build_backbone", "SEM_SEG_HEAD_REGISTRY",
           "build_sem_seg_head", "META_ARCH_REGISTRY", "build_model", "NECK_REGISTRY", "build_neck", "ArgumentError",
           "build_from_node"]
