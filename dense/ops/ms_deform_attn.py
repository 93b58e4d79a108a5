"""Multi-scale deformable attention: the op (CUDA / C++ / reference) and the MSDeformAttn module."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import reference
from ._dispatch import resolve_backend

__all__ = ["ms_deform_attn", "MSDeformAttn", "level_tensors"]


def level_tensors(level_shapes: Sequence[tuple[int, int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """spatial_shapes [L, 2] and level_start_index [L] (int64) of the levels' (H, W), built element by element so that
    sizes that are symbolic under torch.export stay symbolic (``torch.as_tensor`` of them would fix them)."""
    shapes = torch.stack([torch.stack([torch.scalar_tensor(s, dtype=torch.long, device=device) for s in hw])
                          for hw in level_shapes])
    areas = shapes.prod(1)
    return shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor, im2col_step: int = 64,
                   backend: str | None = None, level_shapes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable DETR's ``MSDeformAttnFunction``).

    value [N, S, M, D]; spatial_shapes [L, 2] int64 (H, W); level_start_index [L] int64;
    sampling_locations [N, Lq, M, L, P, 2] (x, y) in [0, 1]; attention_weights [N, Lq, M, L, P]
    -> [N, Lq, M * D]. See :func:`dense.ops.reference.ms_deform_attn` for the exact semantics.
    ``backend``: "cuda" | "cpu" | "reference" | None (fastest available). ``level_shapes``: the same (H, W) as
    Python ints, which the caller usually has: given, nothing reads ``spatial_shapes`` back to the host (no device
    synchronisation, no data-dependent shapes under torch.compile / torch.export); left out, it is read from the
    tensor (the upstream call).
    """
    if value.dim() != 4 or sampling_locations.dim() != 6 or attention_weights.dim() != 5:
        raise ValueError("ms_deform_attn expects value [N,S,M,D], sampling_locations [N,Lq,M,L,P,2] and "
                         f"attention_weights [N,Lq,M,L,P]; got {tuple(value.shape)}, "
                         f"{tuple(sampling_locations.shape)}, {tuple(attention_weights.shape)}")
    if level_shapes is None:
        level_shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    if sum(h * w for h, w in level_shapes) != value.shape[1]:
        raise ValueError(f"value has {value.shape[1]} positions but the level shapes {list(level_shapes)} sum to "
                         f"{sum(h * w for h, w in level_shapes)}")
    backend = resolve_backend(backend, value, "ms_deform_attn")
    if backend == "reference":
        return reference.ms_deform_attn(value, level_shapes, level_start_index, sampling_locations,
                                        attention_weights, im2col_step)
    return torch.ops.dense.ms_deform_attn_forward(value.contiguous(), spatial_shapes.long().contiguous(),
                                                  level_start_index.long().contiguous(),
                                                  sampling_locations.contiguous(), attention_weights.contiguous())


class MSDeformAttn(nn.Module):
    """Deformable DETR's multi-scale deformable attention module, with ViT-Adapter's ``ratio``
    (value/output projection width = ratio * d_model). Keys: sampling_offsets, attention_weights,
    value_proj, output_proj.

    Args:
        d_model: query/value width; n_levels: feature levels; n_heads: heads; n_points: points per
        head and level; ratio: value width factor.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, ratio: float = 1.0):
        super().__init__()
        if int(d_model * ratio) % n_heads != 0:
            raise ValueError(f"d_model * ratio ({d_model} * {ratio}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads = d_model, n_levels, n_heads
        self.n_points, self.ratio = n_points, ratio
        self.im2col_step = 64
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, int(d_model * ratio))
        self.output_proj = nn.Linear(int(d_model * ratio), d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on a ring of 8 directions (point k at radius k+1),
        attention uniform, projections Xavier."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, input_flatten: torch.Tensor,
                input_spatial_shapes: torch.Tensor, input_level_start_index: torch.Tensor,
                input_padding_mask: torch.Tensor | None = None,
                level_shapes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
        """
        Args:
            query: [N, Lq, C]; reference_points: [N, Lq, L, 2] (x, y in [0, 1]) or [N, Lq, L, 4] (boxes cx, cy, w, h);
            input_flatten: [N, S, C]; input_spatial_shapes: [L, 2]; input_level_start_index: [L];
            input_padding_mask: [N, S], True at padding (zeroed values); level_shapes: input_spatial_shapes as
            Python ints (see :func:`ms_deform_attn`: no host read of the tensor when given).
        Returns:
            [N, Lq, C]
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = F.softmax(self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points), -1)
        weights = weights.view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1).to(offsets.dtype)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {reference_points.shape[-1]}")
        # the op runs in float32 for half inputs (as upstream): half-precision locations lose sub-pixel accuracy
        dtype = value.dtype
        with torch.autocast(value.device.type, enabled=False):
            out = ms_deform_attn(_at_least_fp32(value), input_spatial_shapes, input_level_start_index,
                                 _at_least_fp32(locations), _at_least_fp32(weights), self.im2col_step,
                                 level_shapes=level_shapes)
        return self.output_proj(out.to(dtype))


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
