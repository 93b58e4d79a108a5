"""Mask2Former's inference: per-query class logits and mask logits -> semantic scores, panoptic segments or
instances (Detectron2 MaskFormer's semantic_inference / panoptic_inference / instance_inference)."""
from __future__ import annotations

import torch

from ...structures import Instances
from ..layers import resize

__all__ = ["upsample_mask_logits", "semantic_scores", "semantic_inference", "panoptic_inference",
           "instance_inference", "masks_to_boxes"]


def upsample_mask_logits(mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                         out_size: tuple[int, int], chunk: int) -> torch.Tensor:
    """Mask logits [Q, h, w] at stride 4 of the padded input -> [Q, *out_size]: upsampled to ``padded_size``, the
    padding cropped to ``image_size``, resized to ``out_size``, ``chunk`` queries at a time (so that only the
    result and one chunk at the padded size exist at once)."""
    out = mask_logits.new_empty((mask_logits.shape[0], *out_size))
    for s in range(0, mask_logits.shape[0], chunk):
        m = resize(mask_logits[None, s:s + chunk], padded_size, "bilinear")[:, :, :image_size[0], :image_size[1]]
        out[s:s + chunk] = resize(m, out_size, "bilinear")[0]
    return out


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, padded_size: tuple[int, int],
                    image_size: tuple[int, int], upsample: str, chunk: int) -> torch.Tensor:
    """Semantic scores [K, *image_size] of one image: class_logits [Q, K + 1], mask_logits [Q, h, w] at stride 4
    of the padded input.

    ``upsample="masks"`` (Detectron2): mask logits are upsampled to the padded size (``chunk`` queries at a time)
    and combined there; ``"scores"`` (ViT-Adapter's mmseg head): combined at stride 4, the K score maps
    upsampled. Either way the padding is cropped off.
    """
    probs = class_logits.float().softmax(-1)[:, :-1]
    if upsample == "scores":
        scores = torch.einsum("qk,qhw->khw", probs, mask_logits.float().sigmoid())
        return resize(scores[None], padded_size, "bilinear")[0, :, :image_size[0], :image_size[1]]
    if upsample != "masks":
        raise ValueError(f"MODEL.MASK_FORMER.TEST.SEMANTIC_UPSAMPLE must be 'masks' or 'scores', got '{upsample}'")
    out = mask_logits.new_zeros((probs.shape[1], image_size[0] * image_size[1]), dtype=torch.float32)
    for s in range(0, mask_logits.shape[0], chunk):
        m = resize(mask_logits[None, s:s + chunk].float(), padded_size, "bilinear")[0]
        m = m[:, :image_size[0], :image_size[1]].sigmoid().flatten(1)
        out.addmm_(probs[s:s + chunk].T, m)  # in place: no second K x H x W buffer
    return out.view(-1, *image_size)


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """sum_q softmax(class_q)[k] * sigmoid(mask_q): class_logits [Q, K + 1], mask_logits [Q, H, W] -> [K, H, W]."""
    return torch.einsum("qk,qhw->khw", class_logits.float().softmax(-1)[:, :-1], mask_logits.float().sigmoid())


def panoptic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, thing_ids: set[int],
                       object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8):
    """Non-overlapping segments from the confident queries.

    Queries whose top class is not "no object" and scores above ``object_mask_threshold`` compete per pixel by
    score x mask probability. A query's segment is the pixels it wins where its own probability is >= 0.5; it is
    dropped when that keeps less than ``overlap_threshold`` of its own mask; segments of one stuff class merge.

    Returns (segment ids int32 [H, W], 0 = void; segments_info: [{"id", "category_id", "isthing"}]).
    """
    scores, labels = class_logits.float().softmax(-1).max(-1)
    keep = labels.ne(class_logits.shape[-1] - 1) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_logits[keep].float().sigmoid()
    h, w = mask_logits.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device)
    segments_info: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    winner = (cur_scores[:, None, None] * cur_masks).argmax(0)
    stuff_segment: dict[int, int] = {}
    for k in range(cur_classes.shape[0]):
        pred_class = int(cur_classes[k])
        isthing = pred_class in thing_ids
        mask_area = int((winner == k).sum())
        original_area = int((cur_masks[k] >= 0.5).sum())
        mask = (winner == k) & (cur_masks[k] >= 0.5)
        if mask_area == 0 or original_area == 0 or not bool(mask.any()):
            continue
        if mask_area / original_area < overlap_threshold:
            continue
        if not isthing and pred_class in stuff_segment:
            panoptic_seg[mask] = stuff_segment[pred_class]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment[pred_class] = segment_id
        panoptic_seg[mask] = segment_id
        segments_info.append({"id": segment_id, "isthing": isthing, "category_id": pred_class})
    return panoptic_seg, segments_info


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of bool masks [R, H, W] -> [R, 4] (zeros for empty masks)."""
    boxes = masks.new_zeros((masks.shape[0], 4), dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)
    nonempty = rows.any(1)
    if nonempty.any():
        r, c = rows[nonempty].float(), cols[nonempty].float()
        ar_h = torch.arange(masks.shape[1], device=masks.device, dtype=torch.float32)
        ar_w = torch.arange(masks.shape[2], device=masks.device, dtype=torch.float32)
        y0 = torch.where(r > 0, ar_h, float("inf")).amin(1)
        y1 = torch.where(r > 0, ar_h, -1.0).amax(1) + 1
        x0 = torch.where(c > 0, ar_w, float("inf")).amin(1)
        x1 = torch.where(c > 0, ar_w, -1.0).amax(1) + 1
        boxes[nonempty] = torch.stack([x0, y0, x1, y1], 1)
    return boxes


def instance_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, topk: int,
                       thing_ids: set[int] | None = None) -> Instances:
    """The ``topk`` best (query, class) pairs over all Q x K: mask = logit > 0, score = class probability x mean
    mask probability inside the mask, box = the mask's tight box. With ``thing_ids`` (panoptic models) only
    thing classes are kept. class_logits [Q, K + 1], mask_logits [Q, H, W]."""
    k = class_logits.shape[1] - 1
    probs = class_logits.float().softmax(-1)[:, :-1].flatten()
    scores, idx = probs.topk(min(topk, probs.numel()), sorted=False)
    labels, queries = idx % k, torch.div(idx, k, rounding_mode="floor")
    if thing_ids is not None:
        keep = torch.tensor([int(c) in thing_ids for c in labels], dtype=torch.bool, device=labels.device)
        scores, labels, queries = scores[keep], labels[keep], queries[keep]
    logits = mask_logits[queries].float()
    masks = logits > 0
    mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    return Instances(tuple(mask_logits.shape[-2:]), pred_masks=masks, pred_boxes=masks_to_boxes(masks),
                     scores=scores * mask_scores, pred_classes=labels)
