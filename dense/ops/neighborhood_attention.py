"""2-D neighbourhood attention with NATTEN 0.14 semantics (as DAT++'s "N" blocks use it): the ops
(CUDA / C++ / reference) and the NeighborhoodAttention2D module."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import reference
from ._dispatch import resolve_backend

__all__ = ["na2d_qk", "na2d_av", "neighborhood_attention_2d", "NeighborhoodAttention2D"]


def _check(query: torch.Tensor, kernel_size: int, dilation: int) -> None:
    if query.dim() != 5:
        raise ValueError(f"neighbourhood attention expects [B, heads, H, W, D] tensors, got {tuple(query.shape)}")
    if kernel_size % 2 != 1 or kernel_size < 3:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")
    h, w = query.shape[2:4]
    if min(h, w) < kernel_size * dilation:
        raise ValueError(f"neighbourhood attention needs H, W >= kernel_size * dilation = {kernel_size * dilation}; "
                         f"got {h}x{w}. Pad the map first (NeighborhoodAttention2D does).")


def na2d_qk(query: torch.Tensor, key: torch.Tensor, rpb: torch.Tensor | None, kernel_size: int, dilation: int = 1,
            backend: str | None = None) -> torch.Tensor:
    """Logits [B, heads, H, W, K*K] of each query with its clamped K x K window (+ rpb). Semantics:
    :func:`dense.ops.reference.na2d_qk`."""
    _check(query, kernel_size, dilation)
    if resolve_backend(backend, query, "na2d_qk") == "reference":
        return reference.na2d_qk(query, key, rpb, kernel_size, dilation)
    return torch.ops.dense.na2d_qk_forward(query.contiguous(), key.contiguous(),
                                           None if rpb is None else rpb.contiguous(), kernel_size, dilation)


def na2d_av(attn: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int = 1,
            backend: str | None = None) -> torch.Tensor:
    """attn [B, heads, H, W, K*K] applied to each query's window of value [B, heads, H, W, D]."""
    _check(value, kernel_size, dilation)
    if resolve_backend(backend, value, "na2d_av") == "reference":
        return reference.na2d_av(attn, value, kernel_size, dilation)
    return torch.ops.dense.na2d_av_forward(attn.contiguous(), value.contiguous(), kernel_size, dilation)


def neighborhood_attention_2d(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rpb: torch.Tensor | None,
                              kernel_size: int, dilation: int = 1, backend: str | None = None) -> torch.Tensor:
    """softmax(q.k + rpb) v over each query's K x K neighbourhood (q already scaled), all [B, heads, H, W, D]."""
    attn = na2d_qk(query, key, rpb, kernel_size, dilation, backend).softmax(dim=-1)
    return na2d_av(attn, value, kernel_size, dilation, backend)


class NeighborhoodAttention2D(nn.Module):
    """NATTEN 0.14's NeighborhoodAttention2D on channels-last maps [B, H, W, C] -> [B, H, W, C].

    Maps smaller than the window (kernel_size * dilation) are zero-padded at the bottom/right before the
    qkv projection (padded tokens carry the qkv bias, as upstream) and cropped after. Keys: qkv, rpb, proj.
    """

    def __init__(self, dim: int, kernel_size: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 dilation: int = 1, rel_pos_bias: bool = True, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.kernel_size, self.dilation = kernel_size, dilation
        self.window_size = kernel_size * dilation
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h0, w0, c = x.shape
        pad_b, pad_r = max(0, self.window_size - h0), max(0, self.window_size - w0)
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h, w, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = na2d_qk(q, k, self.rpb, self.kernel_size, self.dilation).softmax(dim=-1)
        x = na2d_av(self.attn_drop(attn), v, self.kernel_size, self.dilation)
        x = x.permute(0, 2, 3, 1, 4).reshape(b, h, w, c)[:, :h0, :w0]
        return self.proj_drop(self.proj(x))
