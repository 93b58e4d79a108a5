"""Semantic segmentation from a folder of images and a folder of label PNGs."""
from __future__ import annotations

import logging
import os

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = ["dataset_root", "load_sem_seg", "register_sem_seg"]

logger = logging.getLogger(__name__)


def dataset_root() -> str:
    """Root folder of all datasets: ``$DENSE_DATASETS``, default ``./datasets``."""
    return os.path.expanduser(os.environ.get("DENSE_DATASETS", "datasets"))


def require_dir(path: str, what: str, layout: str) -> None:
    """Raise FileNotFoundError naming ``path`` and the expected ``layout`` when the folder is missing."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{what} folder '{path}' does not exist. Expected layout under $DENSE_DATASETS "
            f"(now '{dataset_root()}'):\n{layout}\nSet DENSE_DATASETS to the folder that holds it."
        )


def load_sem_seg(image_root: str, gt_root: str, image_suffix: str = ".jpg", gt_suffix: str = ".png",
                 reduce_zero_label: bool = False, layout: str = "", split_file: str | None = None) -> list[dict]:
    """Pair every image under ``image_root`` (recursively, by suffix) with the label file of the same relative
    path under ``gt_root`` (``image_suffix`` replaced by ``gt_suffix``). With ``split_file``, only the images
    whose name (without suffix) is listed in it, one per line.

    Returns dicts with ``file_name``, ``sem_seg_file_name`` and ``reduce_zero_label`` (labels shifted by -1
    with 0 -> ignore, as mmseg's reduce_zero_label, when True). Label files are not opened here; a missing one
    is reported by :func:`dense.data.get_dataset_dicts` (error or counted skip, DATALOADER.ON_BAD_SAMPLE).
    """
    layout = layout or f"  {image_root}/**/*{image_suffix}\n  {gt_root}/**/*{gt_suffix}"
    require_dir(image_root, "Image", layout)
    require_dir(gt_root, "Label", layout)
    keep = None
    if split_file is not None:
        if not os.path.isfile(split_file):
            raise FileNotFoundError(f"Split file '{split_file}' does not exist. Expected layout:\n{layout}")
        with open(split_file) as f:
            keep = {line.strip() for line in f if line.strip()}
    records = []
    for dirpath, _, files in sorted(os.walk(image_root, followlinks=True)):
        for f in sorted(files):
            if not f.endswith(image_suffix) or (keep is not None and f[: -len(image_suffix)] not in keep):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), image_root)
            records.append({"file_name": os.path.join(image_root, rel),
                            "sem_seg_file_name": os.path.join(gt_root, rel[: -len(image_suffix)] + gt_suffix),
                            "reduce_zero_label": reduce_zero_label})
    if not records:
        raise FileNotFoundError(f"No '*{image_suffix}' images found under '{image_root}'. Expected layout:\n{layout}")
    logger.info(f"Found {len(records)} images with semantic labels under {image_root}")
    return records


def register_sem_seg(name: str, image_root: str, gt_root: str, metadata: dict, **kwargs) -> None:
    """Register a folder semantic-segmentation dataset under ``name`` (see :func:`load_sem_seg`).
    ``metadata`` should hold ``stuff_classes`` and may hold ``stuff_colors`` and ``ignore_label``."""
    DatasetCatalog.register(name, lambda: load_sem_seg(image_root, gt_root, **kwargs))
    MetadataCatalog.get(name).set(image_root=image_root, sem_seg_root=gt_root, evaluator_type="sem_seg",
                                  ignore_label=metadata.pop("ignore_label", 255), **metadata)
