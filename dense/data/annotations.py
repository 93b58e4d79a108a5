"""Validating instance annotations before training: a clear error, or a counted skip (DATALOADER.ON_BAD_SAMPLE).

mmdetection drops degenerate boxes silently while loading COCO (CocoDataset._parse_ann_info), and pycocotools
reads a 4-number "polygon" as a box. dense names each problem instead, or drops the annotation and counts it.
"""
from __future__ import annotations

import logging
import math
from collections import Counter

from .io import BadSampleError

__all__ = ["check_instance_annotations", "annotation_problem", "MIN_BOX_SIDE"]

logger = logging.getLogger(__name__)

MIN_BOX_SIDE = 1.0  # px: boxes narrower or lower are degenerate (mmdet drops w < 1 or h < 1)


def _polygon_problem(seg) -> str | None:
    if not isinstance(seg, list) or not seg:
        return "malformed polygon: 'segmentation' must be a non-empty list of polygons or an RLE dict"
    for poly in seg:
        if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
            n = len(poly) if isinstance(poly, (list, tuple)) else type(poly).__name__
            return f"malformed polygon: a polygon needs an even number >= 6 of coordinates, got {n}"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly):
            return "malformed polygon: coordinates must be finite numbers"
    return None


def annotation_problem(ann: dict, height: int, width: int) -> str | None:
    """What is wrong with one annotation (XYXY ``bbox`` in pixels, optional ``segmentation``) as "kind: detail",
    or None."""
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return f"malformed box: expected 4 finite numbers, got {box!r}"
    x0, y0, x1, y1 = box
    if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
        return (f"degenerate box: {x1 - x0:g} x {y1 - y0:g} px (zero area or a side below {MIN_BOX_SIDE:g} px, "
                f"which mmdet drops)")
    if min(x1, width) <= max(x0, 0) or min(y1, height) <= max(y0, 0):
        return f"box outside the image: {list(box)} in a {width}x{height} image"
    seg = ann.get("segmentation")
    if seg is None:
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or list(seg.get("size", [])) != [height, width]:
            return f"malformed RLE: needs 'counts' and 'size' [{height}, {width}], got keys {sorted(seg)}"
        return None
    return _polygon_problem(seg)


def check_instance_annotations(records: list[dict], on_bad_sample: str = "error") -> list[dict]:
    """Check every non-crowd annotation of ``records``; crowd regions are not used for training.

    ``on_bad_sample="error"``: raise BadSampleError listing the first problems (file, annotation id, what is
    wrong) and the fix. ``"skip"``: drop the bad annotations (records are copied, not modified), log how many were
    dropped for each kind of problem, and return the records.
    """
    problems: list[tuple[int, int, str]] = []  # (record index, annotation index, problem)
    for i, r in enumerate(records):
        for j, ann in enumerate(r.get("annotations", [])):
            if ann.get("iscrowd", 0):
                continue
            why = annotation_problem(ann, r["height"], r["width"])
            if why is not None:
                problems.append((i, j, why))
    if not problems:
        return records
    if on_bad_sample != "skip":
        shown = "\n".join(f"  {records[i]['file_name']} annotation {records[i]['annotations'][j].get('id', j)}: {why}"
                          for i, j, why in problems[:5])
        raise BadSampleError(f"{len(problems)} invalid instance annotations, e.g.:\n{shown}\nFix the annotation file, "
                             f"or set DATALOADER.ON_BAD_SAMPLE skip to drop them (counted in the log)")
    bad: dict[int, set[int]] = {}
    for i, j, _ in problems:
        bad.setdefault(i, set()).add(j)
    out = list(records)
    for i, js in bad.items():
        out[i] = dict(records[i], annotations=[a for j, a in enumerate(records[i]["annotations"]) if j not in js])
    kinds = Counter(why.split(":")[0] for _, _, why in problems)
    logger.warning(f"Skipped {len(problems)} invalid annotations in {len(bad)} images: "
                   + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
    return out
