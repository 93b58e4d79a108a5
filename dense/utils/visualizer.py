"""Drawing predictions: semantic overlays with a class legend, instances (masks, boxes, labels) and panoptic
segments."""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["palette", "overlay_sem_seg", "draw_instances", "draw_panoptic"]


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct, deterministic RGB colours (golden-ratio hue walk)."""
    out = []
    for i in range(n):
        hsv = np.array([[[int(i * 0.618033988 * 180) % 180, 200, 230]]], np.uint8)
        out.append(tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    return out


def _legend(height: int, entries: list[tuple[str, tuple[int, int, int]]], width: int = 180) -> np.ndarray:
    """A white RGB panel listing (name, colour) entries with swatches."""
    row = 22
    panel = np.full((max(height, row * len(entries) + 8), width, 3), 255, np.uint8)
    for i, (name, color) in enumerate(entries):
        y = 6 + i * row
        cv2.rectangle(panel, (6, y), (24, y + 16), tuple(int(c) for c in color), -1)
        cv2.rectangle(panel, (6, y), (24, y + 16), (0, 0, 0), 1)
        cv2.putText(panel, name[:22], (30, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def _side_by_side(image: np.ndarray, panel: np.ndarray) -> np.ndarray:
    h = max(image.shape[0], panel.shape[0])
    def pad(a):
        return cv2.copyMakeBorder(a, 0, h - a.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    return np.concatenate([pad(image), pad(panel)], axis=1)


def overlay_sem_seg(image: np.ndarray, label: np.ndarray, class_names: list[str],
                    colors: list[tuple[int, int, int]] | None = None, alpha: float = 0.55,
                    ignore_label: int = 255) -> np.ndarray:
    """RGB uint8 ``image`` [H, W, 3] blended with the colours of ``label`` [H, W], plus a legend of the
    classes present (by area, with their share of the image) on the right."""
    colors = colors or palette(len(class_names))
    color_map = np.zeros((max(len(class_names), ignore_label + 1), 3), np.uint8)
    color_map[: len(colors)] = np.array(colors, np.uint8)
    valid = label != ignore_label
    blended = image.copy()
    mixed = (image.astype(np.float32) * (1 - alpha) + color_map[label].astype(np.float32) * alpha).astype(np.uint8)
    blended[valid] = mixed[valid]
    ids, counts = np.unique(label[valid], return_counts=True)
    order = np.argsort(-counts)
    total = max(int(valid.sum()), 1)
    entries = [(f"{class_names[ids[i]]} {100 * counts[i] / total:.0f}%", colors[ids[i]]) for i in order]
    return _side_by_side(blended, _legend(image.shape[0], entries))


def draw_instances(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                   masks: np.ndarray | None, class_names: list[str], colors: list[tuple[int, int, int]] | None = None,
                   alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 ``image`` with instance ``masks`` [N, H, W] blended, ``boxes`` [N, 4] XYXY outlined and
    "class score" labels, plus a legend of the classes present."""
    colors = colors or palette(len(class_names))
    out = image.copy()
    if masks is not None:
        for m, c in zip(masks, classes):
            m = m.astype(bool)
            out[m] = (out[m].astype(np.float32) * (1 - alpha)
                      + np.array(colors[c], np.float32) * alpha).astype(np.uint8)
    for (x0, y0, x1, y1), c, s in zip(boxes.astype(int), classes, scores):
        color = tuple(int(v) for v in colors[c])
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
        text = f"{class_names[c]} {s:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        ty = max(y0, th + 2)
        cv2.rectangle(out, (x0, ty - th - 2), (x0 + tw + 2, ty), color, -1)
        cv2.putText(out, text, (x0 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    present = sorted(set(int(c) for c in classes))
    entries = [(f"{class_names[c]} x{int((classes == c).sum())}", colors[c]) for c in present]
    return _side_by_side(out, _legend(image.shape[0], entries))


def draw_panoptic(image: np.ndarray, segment_ids: np.ndarray, segments_info: list[dict], class_names: list[str],
                  colors: list[tuple[int, int, int]] | None = None, alpha: float = 0.55) -> np.ndarray:
    """RGB uint8 ``image`` with each panoptic segment (``segment_ids`` int [H, W], 0 = void; ``segments_info``
    entries ``{"id", "category_id", "isthing"}``) blended in its class colour — thing instances each a shade of it
    and named at their centre — segment outlines, and a legend of the classes present (segment counts)."""
    colors = colors or palette(len(class_names))
    out = image.copy()
    labels = []
    for k, seg in enumerate(segments_info):
        m = segment_ids == seg["id"]
        if not m.any():
            continue
        color = np.array(colors[seg["category_id"]], np.float32)
        if seg.get("isthing"):
            color = np.clip(color * (0.75 + 0.5 * ((k * 0.618) % 1.0)), 0, 255)  # tell touching instances apart
            ys, xs = np.nonzero(m)
            labels.append((class_names[seg["category_id"]], int(xs.mean()), int(ys.mean())))
        out[m] = (out[m].astype(np.float32) * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    for text, x, y in labels:
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.putText(out, text, (x - tw // 2, y + th // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
    present: dict[int, int] = {}
    for seg in segments_info:
        present[seg["category_id"]] = present.get(seg["category_id"], 0) + 1
    entries = [(f"{class_names[c]} x{n}", colors[c]) for c, n in sorted(present.items())]
    return _side_by_side(out, _legend(image.shape[0], entries))
