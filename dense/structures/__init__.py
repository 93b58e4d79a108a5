from .image_list import ImageList
from .instances import Instances
from .masks import crop_and_resize, paste_masks_in_image

__all__ = ["ImageList", "Instances", "crop_and_resize", "paste_masks_in_image"]
