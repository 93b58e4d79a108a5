"""Multi-level RoIAlign as mmdetection's ``SingleRoIExtractor`` (torchvision's MultiScaleRoIAlign is not aligned)."""
from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_true
from torch import nn
from torchvision.ops import roi_align

__all__ = ["ROIPooler", "POOLER_TYPES"]

# "ROIAlignV2": half-pixel-aligned sampling (mmcv RoIAlign aligned=True, Detectron2 ROIAlignV2);
# "ROIAlign": the legacy, unaligned sampling torchvision's MultiScaleRoIAlign uses
POOLER_TYPES = {"ROIAlignV2": True, "ROIAlign": False}


class ROIPooler(nn.Module):
    """Pools every box from one FPN level: level floor(log2(sqrt(w * h) / finest_scale + 1e-6)) of the levels given,
    clamped to them (mmdet map_roi_levels: boxes below 112 px on the first, 112-224 on the second, ...).

    ``forward(features [L x [N, C, H_l, W_l]], boxes [N x [R_i, 4]] XYXY in input pixels)`` -> [sum R_i, C, S, S].

    Args:
        output_size: S.
        scales: 1 / stride of each level.
        sampling_ratio: samples per bin side; 0 = adaptive ceil(roi size / S) (mmdet, Detectron2; torchvision: 2).
        pooler_type: "ROIAlignV2" (aligned, mmdet / Detectron2) or "ROIAlign" (unaligned, torchvision).
        finest_scale: box scale mapped to the second level's lower bound / 2 (mmdet 56).
    """

    def __init__(self, output_size: int, scales: list[float], sampling_ratio: int = 0, pooler_type: str = "ROIAlignV2",
                 finest_scale: float = 56.0):
        super().__init__()
        if pooler_type not in POOLER_TYPES:
            raise ValueError(f"POOLER_TYPE must be one of {sorted(POOLER_TYPES)}, got '{pooler_type}'")
        self.output_size, self.scales = int(output_size), [float(s) for s in scales]
        self.sampling_ratio, self.aligned, self.finest_scale = (int(sampling_ratio), POOLER_TYPES[pooler_type],
                                                                finest_scale)

    def levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """Level index [R] (0 = the first pooled level) of boxes [R, 4]."""
        scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
        return torch.floor(torch.log2(scale / self.finest_scale + 1e-6)).clamp(0, len(self.scales) - 1).long()

    def forward(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.scales):
            raise ValueError(f"ROIPooler built for {len(self.scales)} levels got {len(features)} feature maps")
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes)]).float()
        out = features[0].new_zeros((rois.shape[0], features[0].shape[1], self.output_size, self.output_size))
        levels = self.levels(rois[:, 1:])
        for lvl, (feat, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == lvl).squeeze(1)
            if guard_or_true(idx.shape[0] > 0):  # traced: pool whatever the level holds (roi_align takes no boxes)
                pooled = roi_align(feat, rois[idx], self.output_size, scale, self.sampling_ratio, self.aligned)
                out[idx] = pooled.to(out.dtype)
        return out
