from .box_head import FCBBoxHead
from .build import SEM_SEG_HEAD_REGISTRY, DecodeHead, build_aux_head, build_sem_seg_head, head_config
from .fcn import FCNHead
from .ham import LightHamHead
from .mask2former import Mask2FormerHead
from .mask_head import FCNMaskHead
from .retina_head import RetinaHead
from .roi_heads import StandardROIHeads
from .rpn import RPNHead
from .sem_fpn import FPNHead
from .upernet import UPerHead

__all__ = ["SEM_SEG_HEAD_REGISTRY", "DecodeHead", "build_aux_head", "build_sem_seg_head", "head_config", "FCNHead",
           "LightHamHead", "Mask2FormerHead", "FPNHead", "UPerHead", "RPNHead", "StandardROIHeads", "FCBBoxHead",
           "FCNMaskHead", "RetinaHead"]
