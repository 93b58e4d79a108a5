"""Pure-PyTorch reference implementations of dense's custom ops.

Same signatures, layouts and semantics as the compiled kernels (and as the upstream ops); always
importable; differentiable by autograd (one-sided derivatives at integer sampling positions, as the
upstream CUDA backward). The tests compare every compiled kernel against these, and these against the
golden outputs of the papers' code. Written for clarity, not speed or memory.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn", "dcnv3", "dscn", "na2d_qk", "na2d_av", "neighborhood_attention_2d",
           "dcn_output_size", "natten_window_start"]


# ------------------------------------------------------------------------------------------------
# Multi-scale deformable attention (Deformable DETR; ViT-Adapter; Mask2Former pixel decoder)
# ------------------------------------------------------------------------------------------------
def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor | Sequence[tuple[int, int]],
                   level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   im2col_step: int = 64) -> torch.Tensor:
    """Multi-scale deformable attention.

    Args:
        value: [N, S, M, D], S = sum of H_l * W_l (levels concatenated, row-major inside a level).
        spatial_shapes: [L, 2] int64 (H_l, W_l), or the same as Python ints (nothing read back from a device).
        level_start_index: [L] int64, offset of each level in S (unused: levels are split by shape).
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) normalised to [0, 1] per level; points outside
            read zeros (bilinear, pixel centres at (i + 0.5) / size, i.e. align_corners=False).
        attention_weights: [N, Lq, M, L, P] (the caller softmaxes over L * P).
        im2col_step: accepted for the upstream signature; no effect.
    Returns:
        [N, Lq, M * D], heads concatenated.
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, p, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist() if isinstance(spatial_shapes, torch.Tensor) else spatial_shapes
    levels = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    out = value.new_zeros(n * m, d, lq)
    for lvl, (h, w) in enumerate(shapes):
        v = levels[lvl].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * m, lq, p, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # [N*M, D, Lq, P]
        a = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(n * m, 1, lq, p)
        out = out + (sampled * a).sum(-1)
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


# ------------------------------------------------------------------------------------------------
# DCNv3 (InternImage) and DSCN (DSAN): deformable sampling on channels-last maps
# ------------------------------------------------------------------------------------------------
def dcn_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _kernel_points(kernel_h: int, kernel_w: int, remove_center: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(i, j) of every sampling point in upstream order: i over kernel_w (outer), j over kernel_h (inner),
    the centre left out when ``remove_center``."""
    i, j = torch.meshgrid(torch.arange(kernel_w, device=device), torch.arange(kernel_h, device=device), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    if remove_center:
        keep = ~((i == kernel_w // 2) & (j == kernel_h // 2))
        i, j = i[keep], j[keep]
    return i, j


def _base_positions(out_size: int, kernel: int, stride: int, pad: int, dilation: int, offset_scale: float,
                    like: torch.Tensor) -> torch.Tensor:
    """Sampling position of kernel point 0 for every output index, before offsets:
    p0 - c * s with p0 = c - pad + o * stride and c = (dilation * (kernel - 1)) >> 1 (upstream CUDA)."""
    c = (dilation * (kernel - 1)) // 2
    p0 = torch.arange(out_size, device=like.device, dtype=like.dtype) * stride - pad + c
    return p0 - c * offset_scale


def _gather_groups(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x: [N, H, W, G, D]; rows/cols/valid: [N, Ho, Wo, G, P] (int, int, bool).
    Returns x[n, rows, cols, g, :] as [N, Ho, Wo, G, P, D], zero where not ``valid``."""
    n, h, w, g, d = x.shape
    flat = x.permute(0, 3, 1, 2, 4).reshape(n, g, h * w, d)  # [N, G, HW, D]
    idx = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).permute(0, 3, 1, 2, 4)  # [N, G, Ho, Wo, P]
    shape = idx.shape
    out = torch.gather(flat, 2, idx.reshape(n, g, -1, 1).expand(-1, -1, -1, d))
    out = out.view(*shape, d).permute(0, 2, 3, 1, 4, 5)  # [N, Ho, Wo, G, P, D]
    return out * valid[..., None].to(out.dtype)


def dcnv3(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int,
          stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, group: int,
          group_channels: int, offset_scale: float, im2col_step: int = 256, remove_center: int = 0) -> torch.Tensor:
    """DCNv3 core op (InternImage ``DCNv3Function``), channels-last.

    Args:
        input: [N, H, W, G * D].
        offset: [N, Ho, Wo, G * P * 2], per group and point an (x, y) offset in pixels.
        mask: [N, Ho, Wo, G * P], modulation (the DCNv3 module softmaxes it over P; the op does not).
        P = kernel_h * kernel_w - remove_center, points ordered i over kernel_w (outer), j over kernel_h.
        Position of point (i, j) at output (ho, wo):
            x = wo * stride_w - pad_w + cw - cw * s + (i * dilation_w + off_x) * s,
            cw = (dilation_w (kernel_w - 1)) >> 1
            y likewise with ho, j, off_y; s = offset_scale.
        Bilinear sampling with zeros outside; a point contributes only if -1 < y < H and -1 < x < W.
        im2col_step: accepted for the upstream signature; no effect.
    Returns:
        [N, Ho, Wo, G * D].
    """
    n, h, w, _ = input.shape
    ho = dcn_output_size(h, kernel_h, stride_h, pad_h, dilation_h)
    wo = dcn_output_size(w, kernel_w, stride_w, pad_w, dilation_w)
    i, j = _kernel_points(kernel_h, kernel_w, remove_center, input.device)
    p = i.numel()
    off = offset.reshape(n, ho, wo, group, p, 2)
    base_w = _base_positions(wo, kernel_w, stride_w, pad_w, dilation_w, offset_scale, offset)
    base_h = _base_positions(ho, kernel_h, stride_h, pad_h, dilation_h, offset_scale, offset)
    loc_w = base_w.view(1, 1, wo, 1, 1) + (i.to(offset.dtype) * dilation_w + off[..., 0]) * offset_scale
    loc_h = base_h.view(1, ho, 1, 1, 1) + (j.to(offset.dtype) * dilation_h + off[..., 1]) * offset_scale
    inside = (loc_h > -1) & (loc_w > -1) & (loc_h < h) & (loc_w < w)
    h0, w0 = torch.floor(loc_h), torch.floor(loc_w)
    lh, lw = loc_h - h0, loc_w - w0
    h0, w0 = h0.long(), w0.long()
    x = input.reshape(n, h, w, group, group_channels)
    sampled = 0
    for dh, dw, weight in ((0, 0, (1 - lh) * (1 - lw)), (0, 1, (1 - lh) * lw), (1, 0, lh * (1 - lw)), (1, 1, lh * lw)):
        r, c = h0 + dh, w0 + dw
        valid = inside & (r >= 0) & (r < h) & (c >= 0) & (c < w)
        sampled = sampled + _gather_groups(x, r, c, valid) * weight[..., None]
    out = (sampled * mask.reshape(n, ho, wo, group, p, 1)).sum(-2)
    return out.reshape(n, ho, wo, group * group_channels)


def dscn(input: torch.Tensor, offset: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
         pad_h: int, pad_w: int, dilation_h: int, dilation_w: int, group: int, group_channels: int,
         offset_scale: float, im2col_step: int = 256, remove_center: int = 0, on_x: bool = True) -> torch.Tensor:
    """DSCN core op (DSAN's deformable strip convolution, upstream ``DSCNFunction``), channels-last.

    A 1-D DCNv3 without mask or weights: every point is displaced along one axis only (x when ``on_x``,
    else y) by one scalar offset, sampled by linear interpolation along that axis (zeros outside) and
    summed over the points. The strip runs along the deformed axis, so the other kernel size must be 1.

    Args:
        input: [N, H, W, G * D].
        offset: [N, Ho, Wo, G * P], P = kernel_h * kernel_w - remove_center.
        Positions as :func:`dcnv3`, with the offset added on the deformed axis only; a point contributes
        only if -1 < y < H and -1 < x < W.
        im2col_step: accepted for the upstream signature; no effect.
    Returns:
        [N, Ho, Wo, G * D].
    """
    if (kernel_h if on_x else kernel_w) != 1:
        raise ValueError(f"DSCN deforms along one axis: kernel_{'h' if on_x else 'w'} must be 1 when on_x={on_x}, "
                         f"got kernel_h={kernel_h}, kernel_w={kernel_w}")
    n, h, w, _ = input.shape
    ho = dcn_output_size(h, kernel_h, stride_h, pad_h, dilation_h)
    wo = dcn_output_size(w, kernel_w, stride_w, pad_w, dilation_w)
    i, j = _kernel_points(kernel_h, kernel_w, remove_center, input.device)
    p = i.numel()
    off = offset.reshape(n, ho, wo, group, p)
    base_w = _base_positions(wo, kernel_w, stride_w, pad_w, dilation_w, offset_scale, offset)
    base_h = _base_positions(ho, kernel_h, stride_h, pad_h, dilation_h, offset_scale, offset)
    if on_x:  # fixed integer row, deformed column
        fixed = (base_h.view(1, ho, 1, 1, 1) + j * dilation_h * offset_scale).expand(n, ho, wo, group, p)
        moving = base_w.view(1, 1, wo, 1, 1) + (i.to(offset.dtype) * dilation_w + off) * offset_scale
        fixed_size, moving_size = h, w
    else:
        fixed = (base_w.view(1, 1, wo, 1, 1) + i * dilation_w * offset_scale).expand(n, ho, wo, group, p)
        moving = base_h.view(1, ho, 1, 1, 1) + (j.to(offset.dtype) * dilation_h + off) * offset_scale
        fixed_size, moving_size = w, h
    inside = (fixed > -1) & (fixed < fixed_size) & (moving > -1) & (moving < moving_size)
    fixed = fixed.round().long()  # exact integers (the fixed kernel size is 1)
    m0 = torch.floor(moving)
    frac = moving - m0
    m0 = m0.long()
    x = input.reshape(n, h, w, group, group_channels)
    sampled = 0
    for dm, weight in ((0, 1 - frac), (1, frac)):
        mi = m0 + dm
        valid = inside & (fixed >= 0) & (mi >= 0) & (mi < moving_size)
        rows, cols = (fixed, mi) if on_x else (mi, fixed)
        sampled = sampled + _gather_groups(x, rows, cols, valid) * weight[..., None]
    return sampled.sum(-2).reshape(n, ho, wo, group * group_channels)


# ------------------------------------------------------------------------------------------------
# 2-D neighbourhood attention (NATTEN 0.14 semantics, as DAT++'s "N" blocks use it)
# ------------------------------------------------------------------------------------------------
def natten_window_start(length: int, kernel_size: int, dilation: int, device=None) -> torch.Tensor:
    """NATTEN's ``get_window_start`` for every index 0..length-1: the first key of each query's window.
    Windows are clamped to stay inside the map; with dilation d each residue class mod d forms its own
    sequence."""
    ns = kernel_size // 2
    i = torch.arange(length, device=device)  # tensor arithmetic, so a symbolic length (torch.export) stays symbolic
    if dilation <= 1:
        return (i - ns).clamp(min=0) + torch.where(i + ns >= length, length - i - ns - 1, 0)
    imodd = i % dilation
    a = (length // dilation) * dilation
    b = length - a
    near_end = torch.where(imodd < b, length - b + imodd - 2 * ns * dilation, a + imodd - kernel_size * dilation)
    inside = torch.where(i + ns * dilation >= length, near_end, i - ns * dilation)
    return torch.where(i - ns * dilation < 0, imodd, inside)


def _na_indices(length: int, kernel_size: int, dilation: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """([L, K] key index of each query's window, [L, K] index into the 2K-1 bias axis)."""
    if length < kernel_size * dilation:
        raise ValueError(f"Neighbourhood attention needs every spatial side >= kernel_size * dilation "
                         f"({kernel_size} * {dilation}); got {length}. Pad the input first (the module does).")
    steps = torch.arange(kernel_size, device=device) * dilation
    keys = natten_window_start(length, kernel_size, dilation, device)[:, None] + steps
    offsets = keys - torch.arange(length, device=device)[:, None]
    bias = torch.div(offsets, dilation, rounding_mode="floor") + kernel_size - 1
    return keys, bias


def na2d_qk(query: torch.Tensor, key: torch.Tensor, rpb: torch.Tensor | None, kernel_size: int,
            dilation: int = 1) -> torch.Tensor:
    """Attention logits of every query with its kernel_size x kernel_size neighbourhood (NATTEN ``natten2dqkrpb``).

    Args:
        query, key: [B, heads, H, W, D] (the caller scales the query).
        rpb: [heads, 2K-1, 2K-1] relative position bias or None; the bias of key (r, c) for query (y, x)
            is rpb[:, (r - y) / d + K - 1, (c - x) / d + K - 1].
    Returns:
        [B, heads, H, W, K*K], keys row-major inside the window.
    """
    b, nh, h, w, d = query.shape
    rows, bias_r = _na_indices(h, kernel_size, dilation, query.device)
    cols, bias_c = _na_indices(w, kernel_size, dilation, query.device)
    keys = key[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # [B, heads, H, W, K, K, D]
    attn = torch.einsum("bnhwd,bnhwijd->bnhwij", query, keys)
    if rpb is not None:
        attn = attn + rpb[:, bias_r[:, None, :, None], bias_c[None, :, None, :]]
    return attn.reshape(b, nh, h, w, kernel_size * kernel_size)


def na2d_av(attn: torch.Tensor, value: torch.Tensor, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """Weighted sum of each query's neighbourhood values (NATTEN ``natten2dav``).

    Args:
        attn: [B, heads, H, W, K*K] (softmaxed); value: [B, heads, H, W, D].
    Returns:
        [B, heads, H, W, D].
    """
    b, nh, h, w, d = value.shape
    rows, _ = _na_indices(h, kernel_size, dilation, value.device)
    cols, _ = _na_indices(w, kernel_size, dilation, value.device)
    vals = value[:, :, rows[:, None, :, None], cols[None, :, None, :]].reshape(b, nh, h, w, kernel_size**2, d)
    return torch.einsum("bnhwk,bnhwkd->bnhwd", attn, vals)


def neighborhood_attention_2d(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rpb: torch.Tensor | None,
                              kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """softmax(na2d_qk(query, key, rpb)) applied to value: [B, heads, H, W, D] -> [B, heads, H, W, D]."""
    attn = na2d_qk(query, key, rpb, kernel_size, dilation).softmax(dim=-1)
    return na2d_av(attn, value, kernel_size, dilation)
