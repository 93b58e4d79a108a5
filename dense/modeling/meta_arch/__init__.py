from .build import META_ARCH_REGISTRY, build_model
from .mask_former import MaskFormer
from .semantic_seg import SemanticSegmentor

__all__ = ["META_ARCH_REGISTRY", "build_model", "MaskFormer", "SemanticSegmentor"]
