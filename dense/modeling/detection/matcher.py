"""Assigning anchors / proposals to ground-truth boxes by IoU, as mmdetection 2.x's ``MaxIoUAssigner``."""
from __future__ import annotations

import torch

__all__ = ["MaxIoUMatcher"]


class MaxIoUMatcher:
    """mmdet ``MaxIoUAssigner`` (``gt_max_assign_all=True``, no ignore regions).

    For IoU [G, A] between G ground truths and A candidates (a column of -1 marks a candidate to ignore):

    1. a candidate whose best IoU is in [0, ``neg_threshold``) is background, at or above ``pos_threshold``
       foreground (assigned to its best gt), otherwise ignored;
    2. low-quality matches (``min_pos_iou >= 0``, mmdet ``match_low_quality``): for every gt, the candidates with
       that gt's highest IoU (all ties) become foreground for that gt when the IoU is >= ``min_pos_iou``; a
       candidate that is best for several gts goes to the last of them, as mmdet's loop over gts does.

    torchvision's ``Matcher(allow_low_quality_matches=True)`` differs in step 2: it has no minimum IoU and keeps a
    recovered candidate on its own best gt.
    """

    def __init__(self, neg_threshold: float, pos_threshold: float, min_pos_iou: float = -1.0):
        if not 0 <= neg_threshold <= pos_threshold <= 1:
            raise ValueError(f"IOU_THRESHOLDS must be [background below, foreground from] with 0 <= bg <= fg <= 1, "
                             f"got [{neg_threshold}, {pos_threshold}]")
        self.neg_threshold, self.pos_threshold, self.min_pos_iou = neg_threshold, pos_threshold, min_pos_iou

    def __call__(self, iou: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (matched gt index int64 [A], 0 where there is no gt; label int8 [A]: 1 fg, 0 bg, -1 ignored).
        Candidates where bool ``valid`` [A] is False take no part and are ignored."""
        num_gt, num = iou.shape
        if valid is not None:
            matched, labels = self(iou.masked_fill(~valid[None], -1.0))
            labels[~valid] = -1
            return matched, labels
        if num_gt == 0:
            return iou.new_zeros(num, dtype=torch.int64), iou.new_zeros(num, dtype=torch.int8)
        best, matched = iou.max(dim=0)
        labels = torch.full((num,), -1, dtype=torch.int8, device=iou.device)
        labels[(best >= 0) & (best < self.neg_threshold)] = 0
        labels[best >= self.pos_threshold] = 1
        if self.min_pos_iou >= 0:
            gt_best = iou.max(dim=1).values[:, None]
            is_best = (iou == gt_best) & (gt_best >= self.min_pos_iou)  # [G, A]
            recovered = is_best.any(dim=0)
            last_gt = num_gt - 1 - is_best.flip(0).to(torch.uint8).argmax(dim=0)
            matched = torch.where(recovered, last_gt, matched)
            labels[recovered] = 1
        return matched, labels
