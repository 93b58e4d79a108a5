from .classification import ClassificationEvaluator
from .coco import COCOEvaluator
from .evaluator import (EVALUATOR_REGISTRY, DatasetEvaluator, DatasetEvaluators, build_evaluator, inference_context,
                        inference_on_dataset)
from .panoptic import COCOPanopticEvaluator
from .sem_seg import SemSegEvaluator

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "ClassificationEvaluator", "COCOEvaluator", "COCOPanopticEvaluator",
           "DatasetEvaluator", "DatasetEvaluators", "inference_context", "inference_on_dataset", "SemSegEvaluator"]
