"""Point sampling of mask logits (PointRend's ``point_sample`` and ``get_uncertain_point_coords_with_randomness``,
as Mask2Former uses them): losses and matching costs are computed on points instead of whole masks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["point_sample", "uncertain_point_coords"]


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` [R, H, W] at ``coords`` [R, P, 2] ((x, y) in [0, 1] of the map, pixel
    corners at 0 and 1; outside the map reads 0) -> [R, P]."""
    out = F.grid_sample(maps[:, None], 2.0 * coords[:, :, None] - 1.0, mode="bilinear", align_corners=False)
    return out[:, 0, :, 0]


def uncertain_point_coords(mask_logits: torch.Tensor, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float) -> torch.Tensor:
    """Points for the mask losses of ``mask_logits`` [R, H, W] -> [R, num_points, 2].

    int(num_points * oversample_ratio) candidates are drawn uniformly; the int(importance_sample_ratio *
    num_points) with the least confident logits (smallest |logit|) are kept and the rest of the points are
    drawn uniformly again.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"Point sampling needs oversample_ratio >= 1 and importance_sample_ratio in [0, 1]; got "
                         f"{oversample_ratio} and {importance_sample_ratio} (MODEL.MASK_FORMER.OVERSAMPLE_RATIO / "
                         f"IMPORTANCE_SAMPLE_RATIO)")
    r = mask_logits.shape[0]
    candidates = torch.rand(r, int(num_points * oversample_ratio), 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, candidates).abs()
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    coords = torch.gather(candidates, 1, idx[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(r, num_random, 2, device=mask_logits.device)], dim=1)
    return coords
