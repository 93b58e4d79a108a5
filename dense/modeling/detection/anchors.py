"""Anchors placed as mmdetection 2.x's ``AnchorGenerator`` places them; torchvision's rounding is an option.

mmdet, Detectron2 and torchvision agree on the geometry (anchor of size s and ratio r = h / w has w = s / sqrt(r),
h = s * sqrt(r), centred on the cell's top-left corner plus ``offset * stride``) but differ in details that change
numbers or checkpoint compatibility, each a config key here:

- order within a cell: mmdet and torchvision are ratio-major (for each ratio, every size), Detectron2 size-major;
  dense follows mmdet, so released mmdet heads (A x K output channels) load unchanged;
- torchvision rounds the cell anchors to whole pixels (MODEL.ANCHOR_GENERATOR.ROUND True);
- torchvision takes the stride of a level as image size // feature size, which differs from the nominal stride
  when the image is not a multiple of it; dense uses the nominal strides of the feature maps (mmdet, Detectron2);
- RetinaNet: mmdet's octave scales (sizes stride * 4 * 2^(k/3), OCTAVE_BASE_SCALE / SCALES_PER_OCTAVE) are exact,
  torchvision truncates them to integers (set SIZES to those integers to reproduce it).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AnchorGenerator", "build_anchor_generator", "cell_anchors", "octave_sizes"]


def octave_sizes(strides: list[int], octave_base_scale: float, scales_per_octave: int) -> list[list[float]]:
    """mmdet octave anchors: level l gets ``strides[l] * octave_base_scale * 2 ** (k / scales_per_octave)``, k < spo."""
    return [[s * octave_base_scale * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)] for s in strides]


def cell_anchors(sizes: list[float], aspect_ratios: list[float], center: float = 0.0,
                 round_to_int: bool = False) -> torch.Tensor:
    """The anchors of one cell, XYXY [len(aspect_ratios) * len(sizes), 4] (float32), ratio-major, centred at
    (center, center). ``round_to_int`` rounds the half-extents to whole pixels first (torchvision)."""
    half = []
    for r in aspect_ratios:
        for s in sizes:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            half.append([-w / 2, -h / 2, w / 2, h / 2])
    half = torch.tensor(half, dtype=torch.float64)
    if round_to_int:
        half = half.round()
    return (half + center).float()


class AnchorGenerator(nn.Module):
    """Anchors of every feature level, in input-image pixels.

    ``forward([(H_0, W_0), ...])`` -> list of [H_l * W_l * A, 4] XYXY: cell anchors shifted by
    (x * stride_l, y * stride_l), ordered (y, x, anchor) - the order in which heads emit their per-location outputs.

    Args:
        strides: stride of each level.
        sizes: anchor sizes (square root of the area, pixels) per level; one list is used for every level.
        aspect_ratios: height / width ratios per level; one list is used for every level.
        offset: anchor centres sit at ``offset * stride`` inside the cell (mmdet center_offset, Detectron2 OFFSET).
        round_to_int: round the cell anchors to whole pixels (torchvision).
    """

    def __init__(self, strides: list[int], sizes: list[list[float]], aspect_ratios: list[list[float]],
                 offset: float = 0.0, round_to_int: bool = False):
        super().__init__()
        n = len(strides)
        sizes = list(sizes) * n if len(sizes) == 1 else list(sizes)
        aspect_ratios = list(aspect_ratios) * n if len(aspect_ratios) == 1 else list(aspect_ratios)
        if len(sizes) != n or len(aspect_ratios) != n:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR: {len(sizes)} SIZES and {len(aspect_ratios)} ASPECT_RATIOS lists "
                             f"for {n} feature levels; give one list for all levels or one per level")
        counts = {len(s) * len(r) for s, r in zip(sizes, aspect_ratios)}
        if len(counts) != 1:
            raise ValueError("MODEL.ANCHOR_GENERATOR: every level needs the same number of anchors (sizes x ratios), "
                             f"got {sorted(counts)}: a head shared over levels predicts a fixed number per location")
        self.strides = [int(s) for s in strides]
        self.num_anchors = counts.pop()
        for i, (stride, s, r) in enumerate(zip(self.strides, sizes, aspect_ratios)):
            self.register_buffer(f"cell_{i}", cell_anchors(s, r, offset * stride, round_to_int), persistent=False)

    def forward(self, grid_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        out = []
        for i, ((h, w), stride) in enumerate(zip(grid_sizes, self.strides)):
            cell = getattr(self, f"cell_{i}")
            ys = torch.arange(h, device=cell.device, dtype=torch.float32) * stride
            xs = torch.arange(w, device=cell.device, dtype=torch.float32) * stride
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + cell[None]).reshape(-1, 4))
        return out

    def valid(self, grid_sizes: list[tuple[int, int]], padded_size: tuple[int, int]) -> torch.Tensor:
        """bool [sum_l H_l * W_l * A]: anchors whose cell lies inside one image padded to ``padded_size`` (mmdet
        ``valid_flags``: in a batch padded to its largest image, the cells beyond an image's own padded extent are
        left out of its training targets)."""
        out = []
        for i, ((h, w), stride) in enumerate(zip(grid_sizes, self.strides)):
            device = getattr(self, f"cell_{i}").device
            rows = torch.arange(int(h), device=device) < min(math.ceil(padded_size[0] / stride), int(h))
            cols = torch.arange(int(w), device=device) < min(math.ceil(padded_size[1] / stride), int(w))
            out.append((rows[:, None] & cols[None, :])[..., None].expand(-1, -1, self.num_anchors).reshape(-1))
        return torch.cat(out)


def build_anchor_generator(cfg, strides: list[int]) -> AnchorGenerator:
    """The MODEL.ANCHOR_GENERATOR anchors for feature levels of the given strides."""
    a = cfg.MODEL.ANCHOR_GENERATOR
    sizes = octave_sizes(strides, a.OCTAVE_BASE_SCALE, a.SCALES_PER_OCTAVE) if a.OCTAVE_BASE_SCALE > 0 else a.SIZES
    return AnchorGenerator(strides, sizes, a.ASPECT_RATIOS, a.OFFSET, a.ROUND)
