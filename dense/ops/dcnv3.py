"""DCNv3 (InternImage): the op (CUDA / C++ / reference) and the DCNv3 module."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import reference
from ._dispatch import resolve_backend

__all__ = ["dcnv3", "DCNv3", "DeformableSamplingModule", "ToChannelsLast", "offset_branch"]


def _check_dcn_shapes(name, input, offset, points_per_group, channels_per_point, kernel_h, kernel_w, stride_h,
                      stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels):
    if input.dim() != 4 or input.shape[-1] != group * group_channels:
        raise ValueError(f"{name}: input must be channels-last [N, H, W, group * group_channels] = "
                         f"[N, H, W, {group * group_channels}], got {tuple(input.shape)}")
    n, h, w, _ = input.shape
    ho = reference.dcn_output_size(h, kernel_h, stride_h, pad_h, dilation_h)
    wo = reference.dcn_output_size(w, kernel_w, stride_w, pad_w, dilation_w)
    expected = (n, ho, wo, group * points_per_group * channels_per_point)
    if tuple(offset.shape) != expected:
        raise ValueError(f"{name}: offset must be {expected} for this input and kernel, got {tuple(offset.shape)}")


def dcnv3(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int,
          stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, group: int, group_channels: int,
          offset_scale: float, im2col_step: int = 256, remove_center: int = 0,
          backend: str | None = None) -> torch.Tensor:
    """DCNv3 core op, upstream ``DCNv3Function`` argument order. input [N, H, W, G*D], offset
    [N, Ho, Wo, G*P*2] (x, y), mask [N, Ho, Wo, G*P] -> [N, Ho, Wo, G*D]. Semantics:
    :func:`dense.ops.reference.dcnv3`. ``im2col_step`` is accepted for compatibility (dense's kernels do
    not need batch chunking); ``backend``: "cuda" | "cpu" | "reference" | None (fastest available)."""
    if remove_center and (kernel_h % 2 == 0 or kernel_w % 2 == 0):
        raise ValueError("remove_center needs odd kernel sizes")
    p = kernel_h * kernel_w - int(remove_center)
    _check_dcn_shapes("dcnv3", input, offset, p, 2, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, group, group_channels)
    if tuple(mask.shape) != tuple(offset.shape[:3]) + (group * p,):
        raise ValueError(f"dcnv3: mask must be {tuple(offset.shape[:3]) + (group * p,)}, got {tuple(mask.shape)}")
    args = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, group_channels,
            offset_scale)
    if resolve_backend(backend, input, "dcnv3") == "reference":
        return reference.dcnv3(input, offset, mask, *args, im2col_step, remove_center)
    return torch.ops.dense.dcnv3_forward(input.contiguous(), offset.contiguous(), mask.contiguous(), *args[:-1],
                                         float(offset_scale), int(remove_center))


class ToChannelsLast(nn.Module):
    """[N, C, H, W] -> [N, H, W, C] (a parameter-free module, so that norm keys keep upstream's index)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def offset_branch(channels: int, kernel: tuple[int, int], ln_eps: float = 1e-6) -> nn.Sequential:
    """InternImage's offset/mask branch: depthwise conv (NCHW) -> LayerNorm (channels-last) -> GELU.
    Keys: ``0`` conv, ``1.1`` LayerNorm (``1.0`` is the permute), ``2`` GELU."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel, padding=((kernel[0] - 1) // 2, (kernel[1] - 1) // 2), groups=channels),
        nn.Sequential(ToChannelsLast(), nn.LayerNorm(channels, eps=ln_eps)),
        nn.GELU(),
    )


class DeformableSamplingModule(nn.Module):
    """Geometry shared by the DCNv3 and DSCN modules: validated once, stored as upstream names them."""

    def _set_geometry(self, channels: int, kernel_size: int, stride: int, pad: int, dilation: int, group: int,
                      offset_scale: float, remove_center: bool) -> None:
        if channels % group != 0:
            raise ValueError(f"channels ({channels}) must be divisible by group ({group})")
        if remove_center and kernel_size % 2 == 0:
            raise ValueError("remove_center needs an odd kernel_size")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        self.pad, self.dilation = pad, dilation
        self.group, self.group_channels, self.offset_scale = group, channels // group, offset_scale
        self.remove_center = int(remove_center)


class DCNv3(DeformableSamplingModule):
    """InternImage's DCNv3 module on channels-last maps [N, H, W, C] -> [N, Ho, Wo, C].

    input_proj -> DCNv3 sampling with offsets and (softmaxed per group) masks predicted from a depthwise
    conv branch of the input -> optional centre-feature scaling -> output_proj. Keys as upstream:
    dw_conv.{0,1.1}, offset, mask, input_proj, output_proj, center_feature_scale_proj_{weight,bias}.
    """

    def __init__(self, channels: int = 64, kernel_size: int = 3, dw_kernel_size: int | None = None, stride: int = 1,
                 pad: int = 1, dilation: int = 1, group: int = 4, offset_scale: float = 1.0,
                 center_feature_scale: bool = False, remove_center: bool = False):
        super().__init__()
        self._set_geometry(channels, kernel_size, stride, pad, dilation, group, offset_scale, remove_center)
        self.center_feature_scale = center_feature_scale
        dw = dw_kernel_size or kernel_size
        points = kernel_size * kernel_size - self.remove_center
        self.dw_conv = offset_branch(channels, (dw, dw))
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.offset, self.mask):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = input.shape
        x = self.input_proj(input)
        x_proj = x
        x1 = self.dw_conv(input.permute(0, 3, 1, 2))
        offset = self.offset(x1)
        mask = F.softmax(self.mask(x1).reshape(n, h, w, self.group, -1), -1).reshape(n, h, w, -1)
        x = dcnv3(x, offset, mask.to(x.dtype), self.kernel_size, self.kernel_size, self.stride, self.stride, self.pad,
                  self.pad, self.dilation, self.dilation, self.group, self.group_channels, self.offset_scale, 256,
                  self.remove_center)
        if self.center_feature_scale:
            scale = F.linear(x1, self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias).sigmoid()
            scale = scale[..., None].repeat(1, 1, 1, 1, self.group_channels).flatten(-2)
            x = x * (1 - scale) + x_proj * scale
        return self.output_proj(x)
