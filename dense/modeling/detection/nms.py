"""Class-aware NMS that also traces: torchvision's ``batched_nms`` eagerly, a form without data-dependent Python
branches under ``torch.compile`` / ``torch.export``."""
from __future__ import annotations

import torch
import torchvision

__all__ = ["batched_nms"]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes [N, 4] (XYXY) kept by NMS within each group of ``idxs`` [N], by decreasing score.

    Eager: ``torchvision.ops.batched_nms`` (per-group NMS for many boxes on CPU, the coordinate trick otherwise).
    Traced: the coordinate trick (each group's boxes shifted beyond every other group's) without torchvision's
    ``if boxes.numel() == 0`` branch on a data-dependent size; empty inputs give an empty result as well.
    """
    if not (torch.compiler.is_compiling() or torch.compiler.is_exporting()):
        return torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)
    extent = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max() + 1  # 1 for no boxes
    return torchvision.ops.nms(boxes + (idxs.to(boxes) * extent)[:, None], scores, iou_threshold)


@torch.library.register_fake("torchvision::nms")
def _nms_fake(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's own fake kernel of ``nms`` says it keeps at least 2 boxes (``create_unbacked_symint``'s default
    minimum), so an exported detector fails its runtime check on an image with 0 or 1 detections: 0 <= kept <= N."""
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: f"boxes should be [N, 4], got {boxes.shape}")
    torch._check(scores.dim() == 1 and scores.shape[0] == boxes.shape[0], lambda: "one score per box")
    kept = torch.library.get_ctx().new_dynamic_size()
    torch._check(kept <= boxes.shape[0])
    return boxes.new_empty(kept, dtype=torch.long)
