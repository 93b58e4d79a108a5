from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from . import datasets  # noqa: F401  (registers the built-in datasets)
from .build import build_test_loader, build_train_loader, get_dataset_dicts
from .io import BadSampleError, read_image, read_sem_seg
from .mappers import (DATASET_MAPPER_REGISTRY, DetectionDatasetMapper, InstanceDatasetMapper, SemSegDatasetMapper,
                      build_mapper)
from . import mask_former_mappers  # noqa: F401  (registers the mask_former_* and *_lsj mappers)
from .classification import ClassificationDatasetMapper, build_classification_transform

__all__ = ["DATASET_MAPPER_REGISTRY", "build_mapper", "DatasetCatalog", "MetadataCatalog", "Metadata",
           "build_train_loader", "build_test_loader", "get_dataset_dicts", "BadSampleError", "read_image",
           "read_sem_seg", "SemSegDatasetMapper", "InstanceDatasetMapper", "DetectionDatasetMapper",
           "ClassificationDatasetMapper", "build_classification_transform"]
