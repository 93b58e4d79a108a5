"""Registration of the semantic-segmentation datasets of the papers, in the folder layouts users already have
(mmsegmentation's ``tools/convert_datasets`` output; Detectron2's ADE20K layout is recognised too), under
``$DENSE_DATASETS`` (default ``./datasets``). Nothing is read until a dataset is used; a missing folder is an
error that names it and shows the expected layout.
"""
from __future__ import annotations

import os

from ...utils.visualizer import palette
from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import (ADE20K_CLASSES, CITYSCAPES_CLASSES, CITYSCAPES_COLORS, COCO_STUFF_CLASSES,
                           PASCAL_CONTEXT_59_CLASSES)
from .sem_seg import dataset_root, load_sem_seg

__all__ = ["SEM_SEG_DATASETS"]

_ADE_LAYOUT = """  ADEChallengeData2016/
    images/{training,validation}/*.jpg
    annotations/{training,validation}/*.png              (raw ADE labels, 0 = other: reduce_zero_label)
  or Detectron2's prepared labels (label - 1, 0 -> 255):
    annotations_detectron2/{training,validation}/*.png"""
_CITYSCAPES_LAYOUT = """  cityscapes/
    leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
    gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png (cityscapesscripts createTrainIdLabelImgs)"""
_COCO_STUFF_164K_LAYOUT = """  coco_stuff164k/
    images/{train2017,val2017}/*.jpg
    annotations/{train2017,val2017}/*_labelTrainIds.png  (mmseg tools/convert_datasets/coco_stuff164k.py)"""
_COCO_STUFF_10K_LAYOUT = """  coco_stuff10k/
    images/{train2014,test2014}/*.jpg
    annotations/{train2014,test2014}/*_labelTrainIds.png  (mmseg tools/convert_datasets/coco_stuff10k.py)"""
_PASCAL_CONTEXT_LAYOUT = """  VOCdevkit/VOC2010/
    JPEGImages/*.jpg
    SegmentationClassContext/*.png                         (mmseg tools/convert_datasets/pascal_context.py)
    ImageSets/SegmentationContext/{train,val}.txt"""


def _ade20k(split: str) -> list[dict]:
    root = os.path.join(dataset_root(), "ADEChallengeData2016")
    d2_labels = os.path.join(root, "annotations_detectron2", split)
    if os.path.isdir(d2_labels):
        return load_sem_seg(os.path.join(root, "images", split), d2_labels, ".jpg", ".png", layout=_ADE_LAYOUT)
    return load_sem_seg(os.path.join(root, "images", split), os.path.join(root, "annotations", split), ".jpg", ".png",
                        reduce_zero_label=True, layout=_ADE_LAYOUT)


def _cityscapes(split: str) -> list[dict]:
    root = os.path.join(dataset_root(), "cityscapes")
    return load_sem_seg(os.path.join(root, "leftImg8bit", split), os.path.join(root, "gtFine", split),
                        "_leftImg8bit.png", "_gtFine_labelTrainIds.png", layout=_CITYSCAPES_LAYOUT)


def _coco_stuff(version: str, split: str) -> list[dict]:
    root = os.path.join(dataset_root(), f"coco_stuff{version}")
    layout = _COCO_STUFF_164K_LAYOUT if version == "164k" else _COCO_STUFF_10K_LAYOUT
    # 10k train ids are 1..171 with 0 = ignore (reduce_zero_label); 164k ids are 0..170 with 255 = ignore
    return load_sem_seg(os.path.join(root, "images", split), os.path.join(root, "annotations", split), ".jpg",
                        "_labelTrainIds.png", reduce_zero_label=version == "10k", layout=layout)


def _pascal_context(split: str) -> list[dict]:
    root = os.path.join(dataset_root(), "VOCdevkit", "VOC2010")
    return load_sem_seg(os.path.join(root, "JPEGImages"), os.path.join(root, "SegmentationClassContext"), ".jpg",
                        ".png", reduce_zero_label=True, layout=_PASCAL_CONTEXT_LAYOUT,
                        split_file=os.path.join(root, "ImageSets", "SegmentationContext", f"{split}.txt"))


# name -> (loader, classes, colours)
SEM_SEG_DATASETS = {
    "ade20k_sem_seg_train": (lambda: _ade20k("training"), ADE20K_CLASSES, None),
    "ade20k_sem_seg_val": (lambda: _ade20k("validation"), ADE20K_CLASSES, None),
    "cityscapes_fine_sem_seg_train": (lambda: _cityscapes("train"), CITYSCAPES_CLASSES, CITYSCAPES_COLORS),
    "cityscapes_fine_sem_seg_val": (lambda: _cityscapes("val"), CITYSCAPES_CLASSES, CITYSCAPES_COLORS),
    "coco_stuff164k_sem_seg_train": (lambda: _coco_stuff("164k", "train2017"), COCO_STUFF_CLASSES, None),
    "coco_stuff164k_sem_seg_val": (lambda: _coco_stuff("164k", "val2017"), COCO_STUFF_CLASSES, None),
    "coco_stuff10k_sem_seg_train": (lambda: _coco_stuff("10k", "train2014"), COCO_STUFF_CLASSES, None),
    "coco_stuff10k_sem_seg_test": (lambda: _coco_stuff("10k", "test2014"), COCO_STUFF_CLASSES, None),
    "pascal_context59_sem_seg_train": (lambda: _pascal_context("train"), PASCAL_CONTEXT_59_CLASSES, None),
    "pascal_context59_sem_seg_val": (lambda: _pascal_context("val"), PASCAL_CONTEXT_59_CLASSES, None),
}


def _register() -> None:
    for name, (loader, classes, colors) in SEM_SEG_DATASETS.items():
        DatasetCatalog.register(name, loader)
        MetadataCatalog.get(name).set(stuff_classes=list(classes),
                                      stuff_colors=[list(c) for c in colors or palette(len(classes))],
                                      ignore_label=255, evaluator_type="sem_seg")


_register()
