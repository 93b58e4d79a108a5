"""Hungarian matching of predicted masks to ground-truth segments (Mask2Former's HungarianMatcher = mmdet's
MaskHungarianAssigner with ClassificationCost, CrossEntropyLossCost and DiceCost)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .points import point_sample

__all__ = ["HungarianMatcher", "batch_sigmoid_ce", "batch_dice"]


def batch_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target: logits [Q, P], targets [M, P] in
    [0, 1] -> [Q, M]."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def batch_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 - (2 |p t| + 1) / (|p| + |t| + 1) of every prediction against every target: [Q, P], [M, P] ->
    [Q, M]."""
    p = logits.sigmoid()
    return 1 - (2 * p @ targets.T + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth segments minimising
    ``cost_class * (-p(class)) + cost_mask * BCE + cost_dice * dice``, the mask terms on ``num_points`` points
    drawn uniformly (the same points for every prediction and target of an image; one ``torch.rand(1, P, 2)``
    per image, in batch order), solved with ``scipy.optimize.linear_sum_assignment``.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544):
        super().__init__()
        self.cost_class, self.cost_mask, self.cost_dice, self.num_points = cost_class, cost_mask, cost_dice, num_points

    def cost_matrix(self, class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor,
                    masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Costs [Q, M] of one image: class_logits [Q, K + 1], mask_logits [Q, h, w], labels [M], masks [M, H, W],
        coords [P, 2] ((x, y) in [0, 1], shared by predictions and targets)."""
        class_cost = -class_logits.float().softmax(-1)[:, labels]
        pred = point_sample(mask_logits.float(), coords[None].expand(mask_logits.shape[0], -1, -1))
        tgt = point_sample(masks.float(), coords[None].expand(masks.shape[0], -1, -1))
        return (self.cost_class * class_cost + self.cost_mask * batch_sigmoid_ce(pred, tgt)
                + self.cost_dice * batch_dice(pred, tgt))

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs: ``pred_logits`` [N, Q, K + 1], ``pred_masks`` [N, Q, h, w]; targets: per image ``labels`` [M]
        and ``masks`` [M, H, W]. Returns per image (query indices, target indices), int64, sorted by query."""
        indices = []
        with torch.autocast(outputs["pred_logits"].device.type, enabled=False):
            for b, tgt in enumerate(targets):
                coords = torch.rand(1, self.num_points, 2, device=outputs["pred_masks"].device)[0]
                if len(tgt["labels"]) == 0:
                    empty = torch.empty(0, dtype=torch.int64)
                    indices.append((empty, empty))
                    continue
                cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], tgt["labels"],
                                        tgt["masks"], coords)
                rows, cols = linear_sum_assignment(cost.cpu().numpy())
                indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
