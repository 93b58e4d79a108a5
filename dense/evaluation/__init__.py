from .coco import COCOEvaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .sem_seg import SemSegEvaluator

__all__ = ["COCOEvaluator", "DatasetEvaluator", "DatasetEvaluators", "inference_context", "inference_on_dataset",
           "SemSegEvaluator"]
