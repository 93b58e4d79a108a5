"""Mask2Former's set criterion: after Hungarian matching, cross-entropy over classes (no-object down-weighted)
and, for matched queries, sigmoid BCE + dice on importance-sampled points."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ....utils import comm
from .matcher import HungarianMatcher
from .points import point_sample, uncertain_point_coords

__all__ = ["SetCriterion", "sigmoid_ce_loss", "dice_loss"]


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Binary cross-entropy averaged over points, summed over masks, divided by ``num_masks``: [R, P], [R, P]."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss 1 - (2 |p t| + 1) / (|p| + |t| + 1) per mask, summed, divided by ``num_masks``: [R, P], [R, P]."""
    p = logits.sigmoid()
    return (1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)).sum() / num_masks


class SetCriterion(nn.Module):
    """Losses of Mask2Former's predictions.

    For each prediction set (the final one and, with deep supervision, every auxiliary one) queries are matched
    to the targets anew; ``loss_ce`` is the cross-entropy of all queries (unmatched ones target "no object",
    weight ``eos_coef``; weighted mean), ``loss_mask`` / ``loss_dice`` are BCE / dice on ``num_points`` points
    per matched mask (:func:`uncertain_point_coords`), normalised by the number of target masks averaged over
    processes (at least 1). Returns unweighted losses named ``loss_ce``, ``loss_mask``, ``loss_dice`` and
    ``loss_ce_<i>``... for auxiliary set i; ``weight_dict`` holds their weights.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, class_weight: float = 2.0,
                 mask_weight: float = 5.0, dice_weight: float = 5.0, eos_coef: float = 0.1, num_points: int = 12544,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75, num_aux: int = 9):
        super().__init__()
        self.num_classes, self.matcher, self.eos_coef = num_classes, matcher, eos_coef
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.weight_dict = dict(weights)
        for i in range(num_aux):
            self.weight_dict.update({f"{k}_{i}": v for k, v in weights.items()})

    def sample_points(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Loss points for matched mask logits [R, h, w] -> [R, P, 2]."""
        return uncertain_point_coords(mask_logits, self.num_points, self.oversample_ratio, self.importance_sample_ratio)

    def loss_labels(self, logits: torch.Tensor, targets: list[dict], indices) -> torch.Tensor:
        """Weighted cross-entropy of logits [N, Q, K + 1]."""
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src.to(logits.device)] = targets[b]["labels"][tgt.to(logits.device)]
        weight = torch.ones(self.num_classes + 1, device=logits.device)
        weight[-1] = self.eos_coef
        return F.cross_entropy(logits.float().transpose(1, 2), target_classes, weight)

    def loss_masks(self, mask_logits: torch.Tensor, targets: list[dict], indices, num_masks: float):
        """(BCE, dice) of the matched masks: mask_logits [N, Q, h, w], target masks [M, H, W] (any resolution:
        points are in normalised coordinates)."""
        src = torch.cat([mask_logits[b, s.to(mask_logits.device)] for b, (s, _) in enumerate(indices)])
        tgt = torch.cat([t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, indices)])
        if src.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero
        src = src.float()
        with torch.no_grad():
            coords = self.sample_points(src)
            labels = point_sample(tgt.to(src.dtype), coords)
        logits = point_sample(src, coords)
        return sigmoid_ce_loss(logits, labels, num_masks), dice_loss(logits, labels, num_masks)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: ``pred_logits`` [N, Q, K + 1], ``pred_masks`` [N, Q, h, w], optional ``aux_outputs`` (list of
        the same); targets: per image ``labels`` int64 [M] and ``masks`` bool [M, H, W]."""
        device = outputs["pred_logits"].device
        num_masks = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        num_masks = max(comm.reduce_dict({"num_masks": num_masks})["num_masks"].item(), 1.0)
        sets = [("", outputs)] + [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        losses = {}
        with torch.autocast(device.type, enabled=False):
            for suffix, out in sets:
                indices = self.matcher(out, targets)
                losses["loss_ce" + suffix] = self.loss_labels(out["pred_logits"], targets, indices)
                losses["loss_mask" + suffix], losses["loss_dice" + suffix] = self.loss_masks(
                    out["pred_masks"], targets, indices, num_masks)
        return losses
