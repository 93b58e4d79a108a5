"""Dataset loaders and the registration of built-in datasets."""
from .classification import load_image_folder, register_image_folder
from .coco import load_coco_json, register_coco_instances
from .sem_seg import dataset_root, load_sem_seg, register_sem_seg
from . import builtin, classification, panoptic, synthetic  # noqa: F401  (register the built-in datasets)

__all__ = ["load_coco_json", "register_coco_instances", "load_sem_seg", "register_sem_seg", "dataset_root",
           "load_image_folder", "register_image_folder"]
