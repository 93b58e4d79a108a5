"""Small building blocks shared by heads and necks.

``ConvNormAct`` keeps mmcv ConvModule's submodule names (``conv``, ``bn``/``gn``/``ln``, ``activate``) so
that released mmseg/mmdet checkpoints map onto dense modules key for key.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torchvision.ops import FrozenBatchNorm2d

from ..utils import comm

if TYPE_CHECKING:
    from .backbone.backbone import ShapeSpec

__all__ = ["drop_path_rates", "get_norm", "freeze_batchnorm", "norm_attr_name", "ConvNormAct", "Upsample", "resize",
           "AdaptiveAvgPool2d", "shared_channels", "pad_to_multiple", "crop",
           "window_partition", "window_merge"]


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Stochastic-depth schedule linear from 0 to ``rate`` over ``n`` blocks (torch.linspace's values, computed
    in Python so models can be built on the meta device)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def get_norm(norm: str, channels: int) -> nn.Module | None:
    """Norm layer by config name: "BN", "SyncBN", "FrozenBN", "GN" (32 groups), "LN" (channels-first) or ""."""
    if not norm:
        return None
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        # SyncBN only synchronises real multi-process CUDA runs; a single process gets plain BN math.
        return (nn.SyncBatchNorm(channels) if comm.get_world_size() > 1 and torch.cuda.is_available()
                else nn.BatchNorm2d(channels))
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm == "LN":
        return LayerNorm2d(channels)
    raise ValueError(f"Unknown norm '{norm}'. Use one of BN, SyncBN, FrozenBN, GN, LN or '' (none)")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Return ``module`` with every BatchNorm2d/SyncBatchNorm replaced by a FrozenBatchNorm2d holding
    the same affine parameters and running statistics (the module itself when it is such a norm)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def norm_attr_name(norm: str) -> str:
    """mmcv's attribute name for a norm layer (build_norm_layer abbreviations)."""
    return {"BN": "bn", "SyncBN": "bn", "FrozenBN": "bn", "GN": "gn", "LN": "ln"}[norm]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """Conv2d -> optional norm -> optional ReLU, with mmcv ConvModule key names.

    The conv has a bias exactly when there is no norm (mmcv ``bias='auto'``), unless ``bias`` says otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, norm: str = "", activation: bool = True,
                 bias: bool | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=not norm if bias is None else bias)
        self.norm_name = norm_attr_name(norm) if norm else None
        if norm:
            self.add_module(self.norm_name, get_norm(norm, out_channels))
        self.activate = nn.ReLU(inplace=True) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear", align_corners: bool = False) -> torch.Tensor:
    """F.interpolate to an explicit output size (the scale is derived from the sizes, as in mmseg). Skipped when the
    size is already ``size`` (under torch.export: only when the shapes' formulas say so, never by a guard on the
    traced sizes, which would make the program fail at other sizes; otherwise the resize runs, which at an equal
    size is exactly the identity in every mode)."""
    same = [a == b for a, b in zip(x.shape[-2:], size)]  # bools, SymBools (export) or tensors (jit.trace)
    if all(statically_known_true(e) if isinstance(e, torch.SymBool) else bool(e) for e in same):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def pad_to_multiple(x: torch.Tensor, multiple: int | tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two dims (bottom / right) of ``x`` [..., H, W] up to multiples of ``multiple`` (an int or
    (mh, mw)). Written as ceil(n / m) * m - n, which torch.export's shape solver simplifies (Swin-style
    ``(m - n % m) % m`` pads the same amounts, but its nested modulos make the solver run for minutes)."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = x.shape[-2:]
    return F.pad(x, (0, (w + mw - 1) // mw * mw - w, 0, (h + mh - 1) // mh * mh - h))


def crop(x: torch.Tensor, h, w) -> torch.Tensor:
    """``x[..., :h, :w]`` as a new tensor (a negative pad): the slice's contiguity, which depends on whether
    anything was cut, is never asked, so torch.export traces one program for sizes that need padding and sizes that
    do not (a slice + view would specialise the program to one of the two)."""
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> ([B * nW, window^2, C], padded (H, W)), zero-padded at the bottom/right."""
    b, h, w, c = x.shape
    hp, wp = -(-h // window) * window, -(-w // window) * window
    x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.view(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_merge(x: torch.Tensor, window: int, batch: int, padded: tuple[int, int], hw: tuple[int, int]):
    """Inverse of :func:`window_partition`, cropped: [B * nW, window^2, C] -> [B, H * W, C]."""
    (hp, wp), (h, w), c = padded, hw, x.shape[-1]
    x = x.view(batch, hp // window, wp // window, window, window, c).permute(0, 5, 1, 3, 2, 4)
    return crop(x.reshape(batch, c, hp, wp), h, w).flatten(2).transpose(1, 2)


class Upsample(nn.Module):
    """Upsample by an integer factor to an explicit size (mmseg's Upsample: no parameters)."""

    def __init__(self, scale_factor: int = 2, mode: str = "bilinear", align_corners: bool = False):
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = scale_factor, mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(s * self.scale_factor if isinstance(self.scale_factor, int) else int(s * self.scale_factor)
                     for s in x.shape[-2:])  # an int factor keeps symbolic sizes symbolic
        return resize(x, size, self.mode, self.align_corners)


class AdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(size)`` whose ONNX export keeps height and width dynamic: under ``torch.export`` the
    pooling is written as two averaging matrices (bin i of a side n covers [floor(i n / s), ceil((i + 1) n / s)), as
    PyTorch's), [N, C, H, W] -> [N, C, s, s] with Einsum, which ONNX has for any input size (its adaptive pooling
    lowering fixes the traced size). Eager and torch.compile run PyTorch's op (equal within float rounding)."""

    def __init__(self, output_size: int):
        super().__init__()
        self.output_size = int(output_size)

    @staticmethod
    def _bins(n, s: int, like: torch.Tensor) -> torch.Tensor:
        """[s, n]: row i averages the bin i of a side of ``n`` cells."""
        i = torch.arange(s, device=like.device)
        start, end = (i * n) // s, ((i + 1) * n + s - 1) // s
        j = torch.arange(n, device=like.device)
        inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])
        return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return F.adaptive_avg_pool2d(x, self.output_size)
        s = self.output_size
        return torch.einsum("ih,nchw,jw->ncij", self._bins(x.shape[-2], s, x), x, self._bins(x.shape[-1], s, x))


def shared_channels(input_shape: dict[str, ShapeSpec], in_features: list[str], key: str) -> int:
    """The channel count the levels ``in_features`` of ``input_shape`` share (a head shared over levels needs one);
    ``key`` is the config key that names them, for the errors."""
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(f"{key} {missing} are not produced by the neck (it provides {list(input_shape)}); "
                         f"check MODEL.FPN.NUM_OUTS / START_LEVEL")
    channels = {input_shape[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError(f"{key}: the levels must have one channel count, got {sorted(channels)}")
    return channels.pop()
