"""Drop-ins for other codebases: Detectron2 backbones (dense.compat.detectron2) and the compiled
MultiScaleDeformableAttention module of the official Deformable DETR / Mask2Former / ViT-Adapter code (provide_msda)."""
from .msda import provide_msda

__all__ = ["provide_msda"]
