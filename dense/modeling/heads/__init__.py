from .build import SEM_SEG_HEAD_REGISTRY, DecodeHead, build_sem_seg_head
from .sem_fpn import FPNHead

__all__ = ["SEM_SEG_HEAD_REGISTRY", "DecodeHead", "build_sem_seg_head", "FPNHead"]
