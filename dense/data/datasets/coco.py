"""COCO-format instance annotations (pycocotools)."""
from __future__ import annotations

import contextlib
import io
import logging
import os

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin_meta import COCO_STUFF_CLASSES
from .sem_seg import dataset_root, require_dir

__all__ = ["load_coco_json", "register_coco_instances", "COCO_THING_CLASSES", "COCO_INSTANCE_SPLITS"]

COCO_THING_CLASSES = COCO_STUFF_CLASSES[:80]  # the 80 COCO object classes, in category-id order
# built-in COCO instance datasets: name -> (image folder, annotation file) under $DENSE_DATASETS/coco
COCO_INSTANCE_SPLITS = {"coco_2017_train": ("train2017", "instances_train2017.json"),
                        "coco_2017_val": ("val2017", "instances_val2017.json")}
_COCO_LAYOUT = """  coco/
    train2017/*.jpg
    val2017/*.jpg
    annotations/instances_train2017.json
    annotations/instances_val2017.json"""

logger = logging.getLogger(__name__)


def load_coco_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Read a COCO instances json into dense records.

    Each record: ``file_name``, ``height``, ``width``, ``image_id`` and ``annotations``, a list of
    ``{"id": annotation id, "bbox": [x0, y0, x1, y1] absolute XYXY, "category_id": contiguous id, "segmentation":
    polygons or RLE, "iscrowd": 0/1}``. When ``dataset_name`` is given its metadata receives ``thing_classes``
    and ``thing_dataset_id_to_contiguous_id``.
    """
    from pycocotools.coco import COCO

    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file '{json_file}' does not exist")
    require_dir(image_root, "Image", f"  {image_root}/<file_name of every image in {json_file}>")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
    cat_ids = sorted(coco.getCatIds())
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    if dataset_name is not None:
        cats = coco.loadCats(cat_ids)
        MetadataCatalog.get(dataset_name).set(thing_classes=[c["name"] for c in cats],
                                              thing_dataset_id_to_contiguous_id=id_map)
    records = []
    for img_id in sorted(coco.imgs):
        img = coco.imgs[img_id]
        anns = []
        for ann in coco.imgToAnns.get(img_id, []):
            x, y, w, h = _xywh(ann, img, json_file)
            if ann.get("category_id") not in id_map:
                raise ValueError(f"{json_file}: annotation {ann.get('id')} of image '{img.get('file_name')}' has "
                                 f"category_id {ann.get('category_id')!r}, which is not among the file's categories "
                                 f"(ids {cat_ids[:20]}{' ...' if len(cat_ids) > 20 else ''}): add the category to "
                                 f"'categories' or fix the annotation")
            obj = {"id": ann.get("id"), "bbox": [x, y, x + w, y + h], "category_id": id_map[ann["category_id"]],
                   "iscrowd": ann.get("iscrowd", 0)}
            if "segmentation" in ann:
                obj["segmentation"] = ann["segmentation"]
            anns.append(obj)
        records.append({"file_name": os.path.join(image_root, img["file_name"]), "height": img["height"],
                        "width": img["width"], "image_id": img_id, "annotations": anns})
    logger.info(f"Loaded {len(records)} images from {json_file}")
    return records


def _xywh(ann: dict, img: dict, json_file: str) -> list[float]:
    """The annotation's COCO bbox [x, y, width, height], or an error naming the file, annotation and image."""
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise ValueError(f"{json_file}: annotation {ann.get('id')} of image '{img.get('file_name')}' has bbox "
                         f"{box!r}; COCO boxes are 4 numbers [x, y, width, height]: fix or remove the annotation")
    return list(box)


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """Register a COCO-json instance dataset under ``name``."""
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)


def _load_builtin_coco(name: str) -> list[dict]:
    image_dir, json_name = COCO_INSTANCE_SPLITS[name]
    root = os.path.join(dataset_root(), "coco")
    json_file = os.path.join(root, "annotations", json_name)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file '{json_file}' does not exist. Expected layout under "
                                f"$DENSE_DATASETS (now '{dataset_root()}'):\n{_COCO_LAYOUT}")
    MetadataCatalog.get(name).set(json_file=json_file, image_root=os.path.join(root, image_dir))
    return load_coco_json(json_file, os.path.join(root, image_dir), name)


def _register_builtin() -> None:
    """COCO 2017 instances (``coco_2017_train``, ``coco_2017_val``); nothing is read until a dataset is used."""
    for name in COCO_INSTANCE_SPLITS:
        DatasetCatalog.register(name, lambda n=name: _load_builtin_coco(n))
        MetadataCatalog.get(name).set(thing_classes=list(COCO_THING_CLASSES), evaluator_type="coco")


_register_builtin()
