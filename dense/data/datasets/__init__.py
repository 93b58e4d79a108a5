"""Dataset loaders and the registration of built-in datasets."""
from .coco import load_coco_json, register_coco_instances
from .sem_seg import dataset_root, load_sem_seg, register_sem_seg
from . import builtin, panoptic, synthetic  # noqa: F401  (register the built-in datasets)

__all__ = ["load_coco_json", "register_coco_instances", "load_sem_seg", "register_sem_seg", "dataset_root"]
