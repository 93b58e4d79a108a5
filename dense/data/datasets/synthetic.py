"""Built-in synthetic dataset: coloured shapes on textured two-region backgrounds.

Deterministic (seeded per image), generated once into ``$DENSE_DATASETS/synthetic_v1`` and registered as

- ``synthetic_sem_seg_{train,val}``: 6 semantic classes (2 stuff + 4 things), label PNGs, 255 = ignore;
- ``synthetic_instances_{train,val}``: the 4 thing classes in COCO json (polygons);
- ``synthetic_panoptic_{train,val}``: COCO panoptic json + RGB-id PNGs.

The cue for a shape's class is its geometry plus a class-biased but widely jittered hue; the two
stuff classes differ in texture, not colour, and are separated by a wavy horizon. Shapes occlude each
other; fragments too small to label are marked ignore (semantic) / void (panoptic) and not annotated.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import cv2
import numpy as np

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json
from .sem_seg import dataset_root, load_sem_seg

__all__ = ["STUFF_CLASSES", "THING_CLASSES", "CLASSES", "COLORS", "synthetic_root", "generate_synthetic"]

logger = logging.getLogger(__name__)

VERSION = 1
STUFF_CLASSES = ["sky", "ground"]
THING_CLASSES = ["circle", "rectangle", "triangle", "cross"]
CLASSES = STUFF_CLASSES + THING_CLASSES  # semantic ids 0..5
COLORS = [(70, 130, 180), (107, 142, 35), (220, 20, 60), (255, 215, 0), (0, 0, 230), (255, 0, 255)]  # RGB, display
SPLITS = {"train": (400, 0), "val": (100, 10_000)}  # images, seed offset
_THING_HUES = [0, 60, 120, 30]  # OpenCV hue (0..180) each thing class is biased towards
_MIN_VISIBLE = 24  # pixels: a visible fragment smaller than this is ignore/void


def synthetic_root() -> str:
    return os.path.join(dataset_root(), f"synthetic_v{VERSION}")


def _texture(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """A BGR float image: smooth gradient ("sky") or high-frequency stripes + noise ("ground")."""
    base = rng.uniform(40, 215, size=3)
    if kind == "sky":
        ramp = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(10, 40, size=3)
        low = cv2.resize(rng.normal(0, 12, size=(4, 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        return base + ramp + low
    yy, xx = np.mgrid[0:h, 0:w]
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 7)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
    return base + stripes * rng.uniform(20, 45) + rng.normal(0, 14, size=(h, w, 3))


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    """uint8 mask of one randomly placed thing of class ``cls`` (index into THING_CLASSES)."""
    mask = np.zeros((h, w), np.uint8)
    r = int(rng.uniform(0.08, 0.2) * min(h, w))
    cx, cy = int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.9) * h)
    name = THING_CLASSES[cls]
    if name == "circle":
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif name == "rectangle":
        rw, rh = int(r * rng.uniform(0.7, 1.3)), int(r * rng.uniform(0.7, 1.3))
        cv2.rectangle(mask, (cx - rw, cy - rh), (cx + rw, cy + rh), 1, -1)
    elif name == "triangle":
        a = rng.uniform(0, 2 * np.pi)
        pts = [(cx + r * 1.3 * np.cos(a + k * 2 * np.pi / 3), cy + r * 1.3 * np.sin(a + k * 2 * np.pi / 3))
               for k in range(3)]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:  # cross
        t = max(2, r // 3)
        cv2.rectangle(mask, (cx - r, cy - t), (cx + r, cy + t), 1, -1)
        cv2.rectangle(mask, (cx - t, cy - r), (cx + t, cy + r), 1, -1)
    return mask.astype(bool)


def _thing_color(rng: np.random.Generator, cls: int) -> np.ndarray:
    hue = (_THING_HUES[cls] + rng.uniform(-25, 25)) % 180
    hsv = np.array([[[hue, rng.uniform(120, 255), rng.uniform(110, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def render(index: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]], np.ndarray]:
    """Image ``index`` of a split with seed offset ``seed``.

    Returns (BGR uint8 image [H,W,3], semantic label [H,W] uint8 with 255 = ignore,
    things as [(thing class, visible bool mask)], stuff map [H,W] int with 0 sky / 1 ground).
    """
    rng = np.random.default_rng(seed + index)
    h, w = (int(v) for v in rng.integers(96, 161, size=2))
    xs = np.arange(w)
    horizon = (h * rng.uniform(0.3, 0.7)
               + rng.uniform(2, 10) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * xs / w + rng.uniform(0, 6.3)))
    stuff = (np.arange(h)[:, None] >= horizon[None, :]).astype(np.int64)
    img = np.where(stuff[..., None] == 0, _texture(rng, h, w, "sky"), _texture(rng, h, w, "ground"))
    label = stuff.astype(np.uint8).copy()
    owner = np.full((h, w), -1, np.int64)
    classes = []
    for k in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(len(THING_CLASSES)))
        mask = _shape_mask(rng, cls, h, w)
        fill = _thing_color(rng, cls) + rng.normal(0, 10, size=(h, w, 3))
        img[mask] = fill[mask]
        owner[mask] = k
        classes.append(cls)
    things = []
    for k, cls in enumerate(classes):
        visible = owner == k
        area = int(visible.sum())
        if area == 0:
            continue
        if area < _MIN_VISIBLE:
            label[visible] = 255
            continue
        label[visible] = len(STUFF_CLASSES) + cls
        things.append((cls, visible))
    img = img + rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label, things, stuff


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def _write_split(root: str, split: str, count: int, seed: int) -> None:
    from pycocotools import mask as mask_util

    for sub in ("images", "sem_seg", "panoptic"):
        os.makedirs(os.path.join(root, sub, split), exist_ok=True)
    images, instances, pan_anns = [], [], []
    ann_id = 1
    for i in range(count):
        img, label, things, stuff = render(i, seed)
        h, w = label.shape
        name = f"{i:05d}"
        cv2.imwrite(os.path.join(root, "images", split, name + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(os.path.join(root, "sem_seg", split, name + ".png"), label)
        images.append({"id": i + 1, "file_name": name + ".jpg", "height": h, "width": w})
        pan = np.zeros((h, w), np.int64)
        segments = []
        for s, _sname in enumerate(STUFF_CLASSES):
            region = (label == s)
            if region.any():
                seg_id = 1 + s
                pan[region] = seg_id
                segments.append(_segment(seg_id, s + 1, region, 0))
        for cls, visible in things:
            polys = _polygons(visible)
            if not polys:
                continue
            rle = mask_util.merge(mask_util.frPyObjects(polys, h, w))
            x, y, bw, bh = mask_util.toBbox(rle).tolist()
            instances.append({"id": ann_id, "image_id": i + 1, "category_id": cls + 1, "segmentation": polys,
                              "area": float(mask_util.area(rle)), "bbox": [x, y, bw, bh], "iscrowd": 0})
            seg_id = 10 + ann_id
            pan[visible] = seg_id
            segments.append(_segment(seg_id, len(STUFF_CLASSES) + cls + 1, visible, 1))
            ann_id += 1
        rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536], axis=-1).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "panoptic", split, name + ".png"), rgb[..., ::-1])
        pan_anns.append({"image_id": i + 1, "file_name": name + ".png", "segments_info": segments})
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    thing_cats = [{"id": c + 1, "name": n, "supercategory": "shape"} for c, n in enumerate(THING_CLASSES)]
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": instances, "categories": thing_cats}, f)
    pan_cats = [{"id": c + 1, "name": n, "isthing": int(n in THING_CLASSES), "color": list(COLORS[c])}
                for c, n in enumerate(CLASSES)]
    with open(os.path.join(root, "annotations", f"panoptic_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": pan_anns, "categories": pan_cats}, f)


def _segment(seg_id: int, category_id: int, mask: np.ndarray, isthing: int) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {"id": seg_id, "category_id": category_id, "area": int(mask.sum()), "bbox": bbox, "iscrowd": 0,
            "isthing": isthing}


def generate_once(root: str, write, what: str) -> str:
    """``write(folder)`` into a temporary sibling of ``root``, renamed into place, unless ``root`` is already complete
    (marked by a ``.complete`` file): concurrent processes and interrupted runs never leave a half-written dataset
    behind (when another process finishes first, its copy is kept). Returns ``root``."""
    if os.path.isfile(os.path.join(root, ".complete")):
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}-", dir=parent)
    try:
        write(tmp)
        open(os.path.join(tmp, ".complete"), "w").close()
        try:
            os.rename(tmp, root)
            logger.info(f"Generated {what} in {root}")
        except OSError:  # another process finished first
            if not os.path.isfile(os.path.join(root, ".complete")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def generate_synthetic(root: str | None = None) -> str:
    """Write the dataset to ``root`` (default :func:`synthetic_root`) unless it is already complete
    (:func:`generate_once`)."""
    def write(folder: str) -> None:
        for split, (count, seed) in SPLITS.items():
            _write_split(folder, split, count, seed)

    return generate_once(root or synthetic_root(), write, "the synthetic dataset")


def _load_sem_seg(split: str) -> list[dict]:
    root = generate_synthetic()
    return load_sem_seg(os.path.join(root, "images", split), os.path.join(root, "sem_seg", split))


def _load_instances(split: str, name: str) -> list[dict]:
    root = generate_synthetic()
    json_file = os.path.join(root, "annotations", f"instances_{split}.json")
    MetadataCatalog.get(name).set(json_file=json_file, image_root=os.path.join(root, "images", split))
    return load_coco_json(json_file, os.path.join(root, "images", split), name)


def _load_panoptic(split: str, name: str) -> list[dict]:
    root = generate_synthetic()
    json_file = os.path.join(root, "annotations", f"panoptic_{split}.json")
    MetadataCatalog.get(name).set(panoptic_json=json_file, panoptic_root=os.path.join(root, "panoptic", split))
    with open(json_file) as f:
        data = json.load(f)
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        records.append({
            "file_name": os.path.join(root, "images", split, img["file_name"]),
            "height": img["height"], "width": img["width"], "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(root, "panoptic", split, ann["file_name"]),
            "sem_seg_file_name": os.path.join(root, "sem_seg", split, img["file_name"].replace(".jpg", ".png")),
            "segments_info": [dict(s, category_id=s["category_id"] - 1) for s in ann["segments_info"]],
        })
    return records


def _register() -> None:
    stuff_colors = [list(c) for c in COLORS]
    for split in SPLITS:
        name = f"synthetic_sem_seg_{split}"
        DatasetCatalog.register(name, lambda s=split: _load_sem_seg(s))
        MetadataCatalog.get(name).set(stuff_classes=CLASSES, stuff_colors=stuff_colors, ignore_label=255,
                                      evaluator_type="sem_seg")
        name = f"synthetic_instances_{split}"
        DatasetCatalog.register(name, lambda s=split, n=name: _load_instances(s, n))
        MetadataCatalog.get(name).set(
            thing_classes=THING_CLASSES, thing_colors=stuff_colors[len(STUFF_CLASSES):], evaluator_type="coco")
        name = f"synthetic_panoptic_{split}"
        DatasetCatalog.register(name, lambda s=split, n=name: _load_panoptic(s, n))
        MetadataCatalog.get(name).set(
            stuff_classes=CLASSES, stuff_colors=stuff_colors, thing_classes=THING_CLASSES,
            # panoptic json category id (class index + 1) -> contiguous id, as Detectron2's metadata
            thing_dataset_id_to_contiguous_id={len(STUFF_CLASSES) + c + 1: len(STUFF_CLASSES) + c
                                               for c in range(len(THING_CLASSES))},
            ignore_label=255, evaluator_type="coco_panoptic_seg")


_register()
