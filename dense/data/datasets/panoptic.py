"""COCO-panoptic-format datasets (a json of segments_info per image + one RGB-id PNG per image): COCO panoptic and
the ADE20K / Cityscapes panoptic conversions Detectron2 and Mask2Former use, under ``$DENSE_DATASETS``.

Records: ``file_name``, ``image_id``, ``pan_seg_file_name``, ``segments_info`` (``id``, ``category_id`` as a
contiguous class id, ``iscrowd``, ``area``, ``isthing``), and ``sem_seg_file_name`` when the dataset's semantic
labels are present (evaluated as semantic segmentation too).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable

from ...utils.visualizer import palette
from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import (ADE20K_CLASSES, ADE20K_PANOPTIC_THING_IDS, CITYSCAPES_CLASSES, CITYSCAPES_COLORS,
                           CITYSCAPES_PANOPTIC_IDS, CITYSCAPES_THING_IDS, COCO_PANOPTIC_CLASSES, COCO_THING_IDS)
from .sem_seg import dataset_root, require_dir

__all__ = ["load_coco_panoptic_json", "register_coco_panoptic", "PanopticSource", "PANOPTIC_DATASETS"]

logger = logging.getLogger(__name__)


def load_coco_panoptic_json(json_file: str, image_root: str, panoptic_root: str, sem_seg_root: str | None = None,
                            image_path: Callable[[str, str], str] = os.path.join, layout: str = "") -> list[dict]:
    """Records of a COCO-panoptic json; category ids become contiguous ids in category-id order.

    ``image_path(image_root, file_name)`` locates an image (Cityscapes keeps them in per-city folders); the semantic
    label of an image is ``sem_seg_root/<its panoptic PNG name>`` when ``sem_seg_root`` exists.
    """
    layout = layout or f"  {json_file}\n  {panoptic_root}/*.png\n  {image_root}/<images' file_name>"
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Panoptic annotation file '{json_file}' does not exist. Expected layout under "
                                f"$DENSE_DATASETS (now '{dataset_root()}'):\n{layout}")
    require_dir(image_root, "Image", layout)
    require_dir(panoptic_root, "Panoptic label", layout)
    with open(json_file) as f:
        data = json.load(f)
    contiguous = {cid: i for i, cid in enumerate(sorted(c["id"] for c in data["categories"]))}
    isthing = {c["id"]: bool(c.get("isthing", 0)) for c in data["categories"]}
    with_sem_seg = sem_seg_root is not None and os.path.isdir(sem_seg_root)
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        record = {"file_name": image_path(image_root, img["file_name"]), "image_id": ann["image_id"],
                  "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                  "segments_info": [dict(s, category_id=contiguous[s["category_id"]], isthing=isthing[s["category_id"]],
                                         iscrowd=s.get("iscrowd", 0)) for s in ann["segments_info"]]}
        if "height" in img:
            record.update(height=img["height"], width=img["width"])
        if with_sem_seg:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, ann["file_name"])
        records.append(record)
    logger.info(f"Loaded {len(records)} panoptic annotations from {json_file}")
    return records


@dataclass
class PanopticSource:
    """Where a COCO-panoptic-format dataset lives (see :func:`load_coco_panoptic_json`); ``instances_json``: COCO
    instance annotations of the same images with the same thing category ids (mask AP of panoptic models)."""

    json_file: str
    image_root: str
    panoptic_root: str
    sem_seg_root: str | None = None
    instances_json: str | None = None
    image_path: Callable[[str, str], str] = os.path.join
    layout: str = ""


def register_coco_panoptic(name: str, metadata: dict, source: Callable[[], PanopticSource]) -> None:
    """Register a COCO-panoptic-format dataset. ``metadata`` holds ``stuff_classes`` (every class, contiguous order)
    and ``thing_dataset_id_to_contiguous_id``; ``source()`` is called when the dataset is used (so $DENSE_DATASETS
    is read then)."""

    def load() -> list[dict]:
        src = source()
        if src.instances_json and os.path.isfile(src.instances_json):
            MetadataCatalog.get(name).set(json_file=src.instances_json)
        return load_coco_panoptic_json(src.json_file, src.image_root, src.panoptic_root, src.sem_seg_root,
                                       src.image_path, src.layout)

    DatasetCatalog.register(name, load)
    meta = dict(metadata)
    meta.setdefault("stuff_colors", [list(c) for c in palette(len(meta["stuff_classes"]))])
    MetadataCatalog.get(name).set(evaluator_type="coco_panoptic_seg", ignore_label=255, **meta)


_COCO_LAYOUT = """  coco/
    {train,val}2017/*.jpg
    panoptic_{train,val}2017/*.png
    annotations/panoptic_{train,val}2017.json
    annotations/instances_{train,val}2017.json            (optional: mask AP of panoptic models)
    panoptic_semseg_{train,val}2017/*.png                 (optional: Mask2Former's
                                                           prepare_coco_semantic_annos_from_panoptic_annos.py)"""
_ADE_LAYOUT = """  ADEChallengeData2016/
    images/{training,validation}/*.jpg
    ade20k_panoptic_{train,val}/*.png, ade20k_panoptic_{train,val}.json   (Mask2Former's prepare_ade20k_pan_seg.py)
    annotations_detectron2/{training,validation}/*.png   (optional: prepare_ade20k_sem_seg.py)"""
_CITYSCAPES_LAYOUT = """  cityscapes/
    leftImg8bit/{train,val}/<city>/*_leftImg8bit.png
    gtFine/cityscapes_panoptic_{train,val}/*.png, gtFine/cityscapes_panoptic_{train,val}.json
                                                          (cityscapesscripts createPanopticImgs)"""


def _cityscapes_image(image_root: str, file_name: str) -> str:
    return os.path.join(image_root, file_name.split("_")[0], file_name)


def _coco(split: str) -> PanopticSource:
    root = os.path.join(dataset_root(), "coco")
    return PanopticSource(os.path.join(root, "annotations", f"panoptic_{split}2017.json"),
                          os.path.join(root, f"{split}2017"), os.path.join(root, f"panoptic_{split}2017"),
                          os.path.join(root, f"panoptic_semseg_{split}2017"),
                          os.path.join(root, "annotations", f"instances_{split}2017.json"), layout=_COCO_LAYOUT)


def _ade20k(split: str, folder: str) -> PanopticSource:
    root = os.path.join(dataset_root(), "ADEChallengeData2016")
    return PanopticSource(os.path.join(root, f"ade20k_panoptic_{split}.json"), os.path.join(root, "images", folder),
                          os.path.join(root, f"ade20k_panoptic_{split}"),
                          os.path.join(root, "annotations_detectron2", folder), layout=_ADE_LAYOUT)


def _cityscapes(split: str) -> PanopticSource:
    root = os.path.join(dataset_root(), "cityscapes")
    return PanopticSource(os.path.join(root, "gtFine", f"cityscapes_panoptic_{split}.json"),
                          os.path.join(root, "leftImg8bit", split),
                          os.path.join(root, "gtFine", f"cityscapes_panoptic_{split}"),
                          image_path=_cityscapes_image, layout=_CITYSCAPES_LAYOUT)


_COCO_META = {"stuff_classes": COCO_PANOPTIC_CLASSES, "thing_classes": COCO_PANOPTIC_CLASSES[:80],
              "thing_dataset_id_to_contiguous_id": {cid: i for i, cid in enumerate(COCO_THING_IDS)}}
_ADE_META = {"stuff_classes": ADE20K_CLASSES, "thing_classes": [ADE20K_CLASSES[i] for i in ADE20K_PANOPTIC_THING_IDS],
             "thing_dataset_id_to_contiguous_id": {cid: cid for cid in ADE20K_PANOPTIC_THING_IDS}}
_CITYSCAPES_META = {"stuff_classes": CITYSCAPES_CLASSES, "stuff_colors": [list(c) for c in CITYSCAPES_COLORS],
                    "thing_classes": CITYSCAPES_CLASSES[11:],
                    "thing_dataset_id_to_contiguous_id": {cid: CITYSCAPES_PANOPTIC_IDS.index(cid)
                                                          for cid in CITYSCAPES_THING_IDS}}

# name -> (source, metadata)
PANOPTIC_DATASETS = {
    "coco_2017_train_panoptic": (lambda: _coco("train"), _COCO_META),
    "coco_2017_val_panoptic": (lambda: _coco("val"), _COCO_META),
    "ade20k_panoptic_train": (lambda: _ade20k("train", "training"), _ADE_META),
    "ade20k_panoptic_val": (lambda: _ade20k("val", "validation"), _ADE_META),
    "cityscapes_fine_panoptic_train": (lambda: _cityscapes("train"), _CITYSCAPES_META),
    "cityscapes_fine_panoptic_val": (lambda: _cityscapes("val"), _CITYSCAPES_META),
}

for _name, (_source, _meta) in PANOPTIC_DATASETS.items():
    register_coco_panoptic(_name, _meta, _source)
