"""Image classification datasets in the ImageFolder layout (``root/<class>/<image>``, as timm and torchvision).

Records are ``{"file_name": absolute path, "image_id": "<class>/<file>", "label": int}``; the metadata holds
``classes`` (display names, index = label), ``class_ids`` (folder names) and ``evaluator_type="classification"``.
Registered at import (nothing is read until a dataset is used):

- ``imagenet_{train,val}``: ``$DENSE_DATASETS/imagenet/{train,val}/<wnid>/*.JPEG``, the 1000 ImageNet-1k synsets
  with timm's class names (metadata ``class_descriptions`` holds the full WordNet lemmas);
- ``synthetic_cls_{train,val}``: 8 classes (4 shapes x 2 fill textures) of 64x64 JPEGs, generated once on first use
  into ``$DENSE_DATASETS/synthetic_cls_v1`` (deterministic, seeded per image), for the demo and the tests.
"""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from ..catalog import DatasetCatalog, MetadataCatalog
from .sem_seg import dataset_root, require_dir
from .synthetic import generate_once

__all__ = ["IMAGE_EXTENSIONS", "SYNTHETIC_CLASSES", "load_image_folder", "register_image_folder",
           "imagenet_classes", "synthetic_cls_root", "generate_synthetic_classification"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched case-insensitively (.JPEG, .PNG, ...)
_SHOWN = 5  # at most this many folder names in an error message


def _layout(root: str) -> str:
    return (f"  {root}/\n    <class_a>/<image>.{{jpg,jpeg,png,bmp,webp}}\n    <class_b>/<image>...\n"
            f"  one folder per class (ImageFolder layout); label = index of the folder name in sorted order")


def _shown(names: list[str]) -> str:
    more = f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _class_dirs(root: str) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (torchvision's ``find_classes``)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def load_image_folder(root: str, layout: str = "", classes: list[str] | None = None) -> list[dict]:
    """Read an ImageFolder tree ``root/<class_dir>/**/<image>`` (extensions :data:`IMAGE_EXTENSIONS`, any case).

    Without ``classes`` the classes are the sorted sub-folder names and label = index, as
    ``torchvision.datasets.ImageFolder`` (same samples in the same order). With ``classes`` (folder names, e.g.
    the 1000 ImageNet wnids) the folders must be exactly those and label = index in ``classes``.

    Returns ``[{"file_name": absolute path, "image_id": "<class_dir>/<file>", "label": int}]`` sorted by class, then
    path. Raises FileNotFoundError (``root`` missing, no class folders, a class folder without images) or
    ValueError (folders differ from ``classes``), naming the folder and showing ``layout``.
    """
    layout = layout or _layout(root)
    require_dir(root, "Image", layout)
    found = _class_dirs(root)
    if not found:
        loose = [f for f in os.listdir(root) if _is_image(f)]
        hint = (f" It holds {len(loose)} images directly: sort them into one sub-folder per class." if loose else "")
        raise FileNotFoundError(f"Image folder '{root}' has no class sub-folders.{hint} Expected layout:\n{layout}")
    if classes is None:
        classes = found
    else:
        classes = list(classes)
        missing = sorted(set(classes) - set(found))
        unexpected = sorted(set(found) - set(classes))
        if missing or unexpected:
            problems = []
            if missing:
                problems.append(f"{len(missing)} of the {len(classes)} expected class folders are missing "
                                f"({_shown(missing)})")
            if unexpected:
                problems.append(f"{len(unexpected)} folders are not expected classes ({_shown(unexpected)})")
            raise ValueError(f"Image folder '{root}' must hold exactly the {len(classes)} class folders of the "
                             f"dataset: {'; '.join(problems)}. Expected layout:\n{layout}")
    records, empty = [], []
    for label, cls in enumerate(classes):
        cls_dir = os.path.join(root, cls)
        before = len(records)
        for dirpath, _, files in sorted(os.walk(cls_dir, followlinks=True)):
            for f in sorted(files):
                if _is_image(f):
                    path = os.path.join(dirpath, f)
                    records.append({"file_name": os.path.abspath(path),
                                    "image_id": os.path.relpath(path, root).replace(os.sep, "/"), "label": label})
        if len(records) == before:
            empty.append(cls)
    if empty:
        raise FileNotFoundError(
            f"{len(empty)} class folders under '{root}' hold no images ({_shown(empty)}, looked for "
            f"{', '.join(IMAGE_EXTENSIONS)} in any case): remove the folder or add images "
            f"(every sub-folder is a class). Expected layout:\n{layout}")
    logger.info(f"Found {len(records)} images of {len(classes)} classes under {root}")
    return records


def register_image_folder(name: str, root: str, classes: list[str] | None = None,
                          class_names: list[str] | None = None) -> None:
    """Register the ImageFolder tree ``root`` (see :func:`load_image_folder`) as dataset ``name``.

    ``classes``: the class folder names (default: the sorted sub-folders); ``class_names``: display names, one per
    class (default: the folder names). Metadata ``classes`` (display names), ``class_ids`` (folder names),
    ``image_root`` and ``evaluator_type="classification"`` are set now when known (the folder names are read now
    only if ``root`` exists), otherwise when the dataset is first loaded.
    """
    if classes is None and os.path.isdir(root):
        classes = _class_dirs(root) or None
    if classes is not None:
        _check_names(name, list(classes), class_names)  # before registering: a failed call leaves no trace
    meta = MetadataCatalog.get(name)

    def load() -> list[dict]:
        ids = meta.get("class_ids")  # once known, the folders must stay the same (labels depend on them)
        records = load_image_folder(root, classes=ids)
        if ids is None:
            ids = _class_dirs(root)
            _check_names(name, ids, class_names)
            meta.set(classes=list(class_names or ids), class_ids=ids)
        return records

    DatasetCatalog.register(name, load)
    meta.set(image_root=root, evaluator_type="classification")
    if classes is not None:
        meta.set(classes=list(class_names or classes), class_ids=list(classes))
    elif class_names is not None:
        meta.set(classes=list(class_names))


def _check_names(name: str, class_ids: list[str], class_names: list[str] | None) -> None:
    if class_names is not None and len(class_names) != len(class_ids):
        raise ValueError(f"Dataset '{name}': {len(class_names)} class_names given for {len(class_ids)} classes "
                         f"({_shown(class_ids)})")


# ---------------------------------------------------------------------------------------------------- ImageNet

_IMAGENET_LAYOUT = """  imagenet/
    train/<wnid>/*.JPEG     the 1000 ImageNet-1k class folders (n01440764, n01443537, ...), as extracted
                            from ILSVRC2012_img_train.tar (one tar per class)
    val/<wnid>/*.JPEG       the same 1000 class folders. The raw ILSVRC2012 val folder is flat (50000 images):
                            sort it into class folders first, e.g. with the common valprep.sh script"""


def imagenet_classes() -> tuple[list[str], list[str], list[str]]:
    """The 1000 ImageNet-1k classes from timm (``timm.data.ImageNetInfo``), in label order (sorted wnids).

    Returns (wnids like "n01440764", display names = first synonym like "tench" (the two names used twice,
    "crane" and "maillot", get the wnid appended), full descriptions like "tench, Tinca tinca").
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    wnids = list(info.label_names())
    descriptions = list(info.label_descriptions())
    names = [d.split(",")[0].strip() for d in descriptions]
    twice = {n for n in names if names.count(n) > 1}
    names = [f"{n} ({w})" if n in twice else n for n, w in zip(names, wnids)]
    return wnids, names, descriptions


def _load_imagenet(split: str, wnids: list[str]) -> list[dict]:
    return load_image_folder(os.path.join(dataset_root(), "imagenet", split), _IMAGENET_LAYOUT, classes=wnids)


# ------------------------------------------------------------------------------------- synthetic classification

SYNTHETIC_VERSION = 1
SYNTHETIC_SHAPES = ["circle", "square", "triangle", "cross"]
SYNTHETIC_TEXTURES = ["smooth", "striped"]  # the shape's fill: a colour gradient or stripes of two colours
# "<texture>_<shape>", sorted: the folder order, so label = index here
SYNTHETIC_CLASSES = sorted(f"{t}_{s}" for t in SYNTHETIC_TEXTURES for s in SYNTHETIC_SHAPES)
SYNTHETIC_SPLITS = {"train": (200, 0), "val": (40, 1)}  # images per class, seed
SYNTHETIC_SIZE = 64


def synthetic_cls_root() -> str:
    return os.path.join(dataset_root(), f"synthetic_cls_v{SYNTHETIC_VERSION}")


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """float32 [size, size] coverage in 0..1 (anti-aliased) of one shape of random size, position and angle."""
    r = rng.uniform(0.24, 0.36) * size
    cx, cy = (rng.uniform(r + 2, size - r - 2) for _ in range(2))
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    def poly(pts):  # pts in units of r around the centre, rotated by a
        return np.round((np.asarray(pts) @ rot.T * r + (cx, cy)) * 16).astype(np.int32)  # 4 fractional bits

    mask = np.zeros((size, size), np.uint8)
    if shape == "circle":
        axes = (round(r * 16), round(r * rng.uniform(0.85, 1.0) * 16))
        cv2.ellipse(mask, (round(cx * 16), round(cy * 16)), axes, np.degrees(a), 0, 360, 255, -1, cv2.LINE_AA, 4)
    elif shape == "square":
        s = 0.82
        cv2.fillPoly(mask, [poly([(-s, -s), (s, -s), (s, s), (-s, s)])], 255, cv2.LINE_AA, 4)
    elif shape == "triangle":
        pts = [(1.15 * np.cos(k * 2 * np.pi / 3), 1.15 * np.sin(k * 2 * np.pi / 3)) for k in range(3)]
        cv2.fillPoly(mask, [poly(pts)], 255, cv2.LINE_AA, 4)
    else:  # cross
        t = rng.uniform(0.28, 0.4)
        for bar in ([(-1, -t), (1, -t), (1, t), (-1, t)], [(-t, -1), (t, -1), (t, 1), (-t, 1)]):
            cv2.fillPoly(mask, [poly(bar)], 255, cv2.LINE_AA, 4)  # one call each: overlap must not cancel
    return mask.astype(np.float32) / 255


def _colour(rng: np.random.Generator, away_from: np.ndarray | None = None, min_dist: float = 90) -> np.ndarray:
    """A random BGR colour, at least ``min_dist`` (L2) from ``away_from`` when given."""
    while True:
        c = rng.uniform(0, 255, size=3)
        if away_from is None or np.linalg.norm(c - away_from) >= min_dist:
            return c


def render_classification(cls: int, index: int, seed: int) -> np.ndarray:
    """Image ``index`` of class ``cls`` (index into :data:`SYNTHETIC_CLASSES`) of a split with ``seed``:
    BGR uint8 [64, 64, 3]. A shape filled with a gradient or stripes on a smooth colour field, plus noise."""
    rng = np.random.default_rng((seed, cls, index))
    texture, shape = SYNTHETIC_CLASSES[cls].split("_")
    n = SYNTHETIC_SIZE
    bg_colour = _colour(rng)
    low = cv2.resize(rng.normal(0, 30, size=(3, 3, 3)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    background = bg_colour + low
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    a = rng.uniform(0, np.pi)
    along = (xx * np.cos(a) + yy * np.sin(a)) / n  # -1..1.4 across the image
    c1 = _colour(rng, bg_colour)
    c2 = _colour(rng, c1, 150 if texture == "striped" else 60)  # visible stripes; a gradient of some range
    if texture == "smooth":
        t = np.clip(along * rng.uniform(0.5, 1.2) + rng.uniform(-0.2, 0.3), 0, 1)
    else:
        period = rng.uniform(5, 9) / n
        t = 0.5 + 0.5 * np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
    fill = c1 + t[..., None] * (c2 - c1)
    alpha = _shape_mask(rng, shape, n)[..., None]
    img = background * (1 - alpha) + fill * alpha + rng.normal(0, rng.uniform(2, 6), size=(n, n, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_synthetic_classification(root: str | None = None) -> str:
    """Write ``root/{train,val}/<class>/NNNNN.jpg`` (default root :func:`synthetic_cls_root`; 200 train and 40 val
    images per class, JPEG quality 95) unless it is already complete, and return ``root`` (atomically:
    :func:`~dense.data.datasets.synthetic.generate_once`)."""
    def write(folder: str) -> None:
        for split, (count, seed) in SYNTHETIC_SPLITS.items():
            for cls, cls_name in enumerate(SYNTHETIC_CLASSES):
                os.makedirs(os.path.join(folder, split, cls_name))
                for i in range(count):
                    cv2.imwrite(os.path.join(folder, split, cls_name, f"{i:05d}.jpg"),
                                render_classification(cls, i, seed), [cv2.IMWRITE_JPEG_QUALITY, 95])

    return generate_once(root or synthetic_cls_root(), write, "the synthetic classification dataset")


def _load_synthetic(split: str) -> list[dict]:
    return load_image_folder(os.path.join(generate_synthetic_classification(), split), classes=SYNTHETIC_CLASSES)


def _register() -> None:
    wnids, names, descriptions = imagenet_classes()
    for split in ("train", "val"):
        name = f"imagenet_{split}"
        DatasetCatalog.register(name, lambda s=split: _load_imagenet(s, wnids))
        MetadataCatalog.get(name).set(classes=list(names), class_ids=list(wnids), class_descriptions=list(descriptions),
                                      evaluator_type="classification")
    for split in SYNTHETIC_SPLITS:
        name = f"synthetic_cls_{split}"
        DatasetCatalog.register(name, lambda s=split: _load_synthetic(s))
        MetadataCatalog.get(name).set(classes=list(SYNTHETIC_CLASSES), class_ids=list(SYNTHETIC_CLASSES),
                                      evaluator_type="classification")


_register()
