from .build import META_ARCH_REGISTRY, build_model
from .classifier import ImageClassifier
from .detector import Detector, detector_postprocess
from .mask_former import MaskFormer
from .rcnn import GeneralizedRCNN
from .retinanet import RetinaNet
from .semantic_seg import SemanticSegmentor

__all__ = ["META_ARCH_REGISTRY", "build_model", "Detector", "detector_postprocess", "GeneralizedRCNN",
           "ImageClassifier", "MaskFormer", "RetinaNet", "SemanticSegmentor"]
