"""DSCN (DSAN's deformable strip convolution): the op (CUDA / C++ / reference) and DSAN's DSCNX / DSCNY
modules."""
from __future__ import annotations

import torch
from torch import nn

from . import reference
from ._dispatch import resolve_backend
from .dcnv3 import DeformableSamplingModule, _check_dcn_shapes, offset_branch

__all__ = ["dscn", "DSCNX", "DSCNY"]


def dscn(input: torch.Tensor, offset: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
         pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, group: int, group_channels: int, offset_scale: float,
         im2col_step: int = 256, remove_center: int = 0, on_x: bool = True, backend: str | None = None) -> torch.Tensor:
    """DSCN core op, upstream ``DSCNFunction`` argument order. input [N, H, W, G*D], offset [N, Ho, Wo, G*P]
    (one scalar per point along the deformed axis: x when ``on_x``, else y) -> [N, Ho, Wo, G*D].
    Semantics: :func:`dense.ops.reference.dscn`. The gradient of the offsets is exact for every group
    width (upstream's CUDA backward drops channel 0's term for group widths 10 and 20)."""
    if (kernel_h if on_x else kernel_w) != 1:
        raise ValueError(f"DSCN deforms along one axis: kernel_{'h' if on_x else 'w'} must be 1 when on_x={on_x}")
    if remove_center and (kernel_h % 2 == 0 or kernel_w % 2 == 0):
        raise ValueError("remove_center needs odd kernel sizes")
    p = kernel_h * kernel_w - int(remove_center)
    _check_dcn_shapes("dscn", input, offset, p, 1, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, group, group_channels)
    args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
            offset_scale)
    if resolve_backend(backend, input, "dscn") == "reference":
        return reference.dscn(input, offset, *args, im2col_step, remove_center, on_x)
    return torch.ops.dense.dscn_forward(input.contiguous(), offset.contiguous(), *args[:-1], float(offset_scale),
                                        int(remove_center), bool(on_x))


class _DSCNBase(DeformableSamplingModule):
    """Offsets (one per group and point, along one axis) predicted from a strip depthwise conv branch of a
    separate NCHW guide map, then DSCN sampling of the channels-last input."""

    on_x = True

    def __init__(self, channels: int = 64, kernel_size: int = 3, dw_kernel_size: int | None = None, stride: int = 1,
                 pad: int = 1, dilation: int = 1, group: int = 4, offset_scale: float = 1.0,
                 remove_center: bool = False):
        super().__init__()
        self._set_geometry(channels, kernel_size, stride, pad, dilation, group, offset_scale, remove_center)
        dw = dw_kernel_size or kernel_size
        self.dw_conv = offset_branch(channels, (1, dw) if self.on_x else (dw, 1))
        self.offset = nn.Linear(channels, group * (kernel_size - self.remove_center))
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def _sample(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        offset = self.offset(self.dw_conv(guide))
        k, s, p, d = self.kernel_size, self.stride, self.pad, self.dilation
        geometry = (1, k, 1, s, 0, p, 1, d) if self.on_x else (k, 1, s, 1, p, 0, d, 1)
        return dscn(x, offset, *geometry, self.group, self.group_channels, self.offset_scale, 256, self.remove_center,
                    self.on_x)


class DSCNX(_DSCNBase):
    """DSAN's horizontal strip: ``input_proj`` then a 1 x K DSCN along x.
    forward(x [N, H, W, C] channels-last, guide [N, C, H, W]) -> [N, H, W, C]."""

    on_x = True

    def __init__(self, channels: int = 64, *args, **kwargs):
        super().__init__(channels, *args, **kwargs)
        self.input_proj = nn.Linear(channels, channels)
        nn.init.xavier_uniform_(self.input_proj.weight)
        nn.init.zeros_(self.input_proj.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self._sample(self.input_proj(x), guide)


class DSCNY(_DSCNBase):
    """DSAN's vertical strip: a K x 1 DSCN along y (no projection).
    forward(x [N, H, W, C] channels-last, guide [N, C, H, W]) -> [N, H, W, C]."""

    on_x = False

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        return self._sample(x, guide)
