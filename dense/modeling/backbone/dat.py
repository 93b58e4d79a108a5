"""DAT++: Vision Transformer with Deformable Attention (Xia et al., arXiv 2309.01430), dense-prediction form.

The backbone of LeapLabTHU/DAT-Segmentation and DAT-Detection: a conv stem (stride 4), four stages of
blocks alternating neighbourhood attention ("N", 7x7, NATTEN 0.14 semantics) and deformable attention
("D"), a local perception unit (3x3 depthwise conv residual) before every block and a conv MLP. Each
stage's output goes through its own LayerNorm (``norms.i``) and is returned, before the stride-2 down
projection, as res2..res5 (strides 4, 8, 16, 32). Module and key names equal upstream's, so released
checkpoints load without renaming.

The original DAT (Xia et al., CVPR 2022; LeapLabTHU/DAT@566a593) is the same module with
``MODEL.DAT.VERSION: "v1"``: Conv4x4 s4 + LN stem, Conv2x2 s2 + LN down projections, plain Linear MLP
(``mlps.d.chunk.linear1/2``), no LPU, Swin window blocks "L" (window attention) and "S" (shifted window)
with relative-position bias tables, and the v1 deformable attention (tanh-bounded offsets scaled by 1/Hk,
reference points and query grid at cell centres normalised by the size, a position-bias table shaped for
the pretraining size and resized bicubically to other sizes). Windows pad the map to a multiple of the
window and crop back, the stem and down projections pad to their stride, so any input size works. What
tells the two apart are the named switches of :class:`DATDesign`; "pp" and "v1" are its two presets.

This file is the whole DAT family: the model, its config node (:func:`add_dat_config`) and the rules of
its released checkpoints (``DAT.released``; upstream's key names are dense's).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...checkpoint.released import ReleasedCheckpoint
from ...config.config import CfgNode as CN
from ...ops import NeighborhoodAttention2D
from ..layers import crop, drop_path_rates, pad_to_multiple, resize
from ..registry_utils import ArgumentError, build_from_node
from .backbone import Backbone, windows_min_size
from .build import BACKBONE_REGISTRY

__all__ = ["DAT", "DATClassifierHead", "DATDesign", "DAT_VERSIONS", "DeformableAttention", "WindowAttention",
           "DAT_MIN_SIZE", "add_dat_config"]


def add_dat_config(cfg: CN) -> None:
    """MODEL.DAT: the keyword arguments of :class:`DAT` (defaults: DAT-T++)."""
    cfg.MODEL.DAT = d = CN()
    d.VERSION = "pp"  # preset of DATDesign: "pp" = DAT++ (conv stem, LPU, conv MLP); "v1" = CVPR-2022 DAT (4x4 stem,
    #                   plain MLP, v1 D-attn)
    d.WINDOW_SIZE = 7  # window of the Swin "L" / shifted "S" blocks (original DAT: 7 at 224, 12 at 384)
    d.DIMS = [64, 128, 256, 512]  # channels of the four stages (each twice the last; the stem gives DIMS[0])
    d.HEADS = [2, 4, 8, 16]  # attention heads per stage (head dim 32)
    d.GROUPS = [1, 2, 4, 8]  # offset groups of the deformable ("D") blocks per stage
    d.STAGE_SPEC = ["ND", "NDND", "NDNDNDNDNDNDNDNDND", "DD"]  # blocks per stage: N = neighbourhood, D = deformable,
    #                                                            L / S = (shifted) window
    d.STRIDES = [8, 4, 2, 1]  # offset-network stride per stage (sampled keys ~ image / 32)
    d.KSIZES = [9, 7, 5, 3]  # offset-network depthwise kernel per stage
    d.OFFSET_RANGE_FACTOR = [-1, -1, -1, -1]  # < 0: raw offsets, position clamped (DAT++) / tanh-ed (v1);
    #                                           > 0: tanh(offset) * factor / (Hk-1) (DAT++) or / Hk (v1)
    d.NAT_KERNEL_SIZE = 7  # window of the neighbourhood-attention blocks
    d.EXPANSION = 4  # MLP expansion ratio
    d.IMG_SIZE = 224  # pretraining resolution; sets the position-bias table sizes
    d.DROP_PATH_RATE = 0.0  # stochastic depth, linear over all blocks
    d.USE_CHECKPOINT = False  # activation checkpointing per stage (saves memory in training)
    cfg.register_removed_key("MODEL.DAT.DIM_STEM", "the stem's channels are MODEL.DAT.DIMS[0]; delete the key")
    cfg.register_removed_key("MODEL.DAT.DEPTHS", "the blocks per stage are the lengths of MODEL.DAT.STAGE_SPEC; "
                                                 "delete the key")


@dataclass(frozen=True)
class DATDesign:
    """The behaviours that tell the original DAT (CVPR 2022) and DAT++ apart, as named switches; DAT_VERSIONS holds
    the two presets MODEL.DAT.VERSION names."""

    overlapping_embed: bool  # stem two 3x3 s2 convs, down projections 3x3 s2 (DAT++); else 4x4 s4 / 2x2 s2 patch
    #                          convs with Swin's padding to the stride
    local_perception: bool  # a 3x3 depthwise residual (LPU) before every block (DAT++)
    conv_mlp: bool  # MLP with a depthwise 3x3 residual in the hidden layer (DAT++); else a plain two-Linear MLP
    centred_sampling: bool  # D-attention: key reference points and query grid at cell centres over n, offsets / Hk,
    #                         positions tanh-ed (v1); else DAT++'s grid over n - 1, offsets / (Hk - 1), positions
    #                         clamped
    resized_rpe: bool  # D-attention bias table viewed at (2H-1, 2W-1) and resized bicubically at other sizes (v1);
    #                    else sampled in normalised coordinates


DAT_VERSIONS = {
    "pp": DATDesign(overlapping_embed=True, local_perception=True, conv_mlp=True, centred_sampling=False,
                    resized_rpe=False),  # DAT++ (2023)
    "v1": DATDesign(overlapping_embed=False, local_perception=False, conv_mlp=False, centred_sampling=True,
                    resized_rpe=True),  # the original DAT (CVPR 2022)
}

DAT_MIN_SIZE = 33  # DAT++: the stride-32 map must be >= 2 per side: its D-attention normalises by (size - 1)


class LayerNormProxy(nn.Module):
    """LayerNorm over the channels of an NCHW map (upstream's LayerNormProxy; key ``norm``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvMLP(nn.Module):
    """1x1 conv C->eC, + depthwise 3x3 residual, GELU, 1x1 conv eC->C (TransformerMLPWithConv).
    The GELU comes after the depthwise residual, as upstream."""

    def __init__(self, channels: int, expansion: int, drop: float = 0.0):
        super().__init__()
        hidden = channels * expansion
        self.linear1 = nn.Sequential(nn.Conv2d(channels, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, channels, 1))
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.linear1(x))
        x = self.act(x + self.dwc(x))
        return self.drop(self.linear2(x))


class NeighborhoodAttentionCF(NeighborhoodAttention2D):
    """NeighborhoodAttention2D on NCHW maps (DAT keeps channels first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PlainMLP(nn.Module):
    """Original DAT's TransformerMLP on NCHW maps: Linear C->eC, GELU, Linear eC->C (key ``chunk``)."""

    def __init__(self, channels: int, expansion: int, drop: float = 0.0):
        super().__init__()
        hidden = channels * expansion
        self.chunk = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(channels, hidden)), ("act", nn.GELU()), ("drop1", nn.Dropout(drop)),
            ("linear2", nn.Linear(hidden, channels)), ("drop2", nn.Dropout(drop)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _shift_window_mask(h: int, w: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Swin's shifted-window mask for an (h, w) map (multiples of ``window``): [nW, ws*ws, ws*ws], 0 / -100."""
    img = torch.zeros(h, w, device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = img.reshape(h // window, window, w // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Original DAT's ``LocalAttention`` ("L") and ``ShiftWindowAttention`` ("S", ``shift`` > 0; DAT's stages give
    ceil(window / 2), i.e. 4 for window 7, one more than Swin's window // 2) on NCHW maps.

    Swin window attention with a ((2ws-1)^2, heads) relative-position bias table indexed by the int64
    ``relative_position_index`` buffer. The map is zero-padded bottom/right to a multiple of the window and
    cropped back. The shifted form keeps upstream's ``attn_mask`` buffer (for ``fmap_size``, the map size at
    the pretraining resolution) so released keys load, but computes the mask for the padded runtime size
    (equal values at the pretraining size).
    """

    def __init__(self, dim: int, heads: int, window_size: int, shift: int = 0, fmap_size: int | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"WindowAttention: dim {dim} must be divisible by heads {heads}")
        self.heads, self.window_size, self.shift = heads, window_size, shift
        self.scale = (dim // heads) ** -0.5
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)
        ws = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1])
        if shift:
            if not 0 < shift < ws:
                raise ValueError(f"WindowAttention: shift {shift} must be in (0, window {ws})")
            fmap = fmap_size or ws
            fmap = -(-fmap // ws) * ws
            self.register_buffer("attn_mask", _shift_window_mask(fmap, fmap, ws, shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = self.window_size
        x = pad_to_multiple(x, ws)
        hp, wp = x.shape[-2:]
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(2, 3))
        r1, r2, n = hp // ws, wp // ws, ws * ws
        t = x.reshape(b, c, r1, ws, r2, ws).permute(0, 2, 4, 3, 5, 1).reshape(b * r1 * r2, n, c)
        q, k, v = self.proj_qkv(t).reshape(-1, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if self.shift:
            mask = _shift_window_mask(hp, wp, ws, self.shift, x.device).to(attn.dtype)
            attn = (attn.view(b, r1 * r2, self.heads, n, n) + mask[None, :, None]).view(-1, self.heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        t = self.proj_drop(self.proj_out((attn @ v).transpose(1, 2).reshape(-1, n, c)))
        x = t.reshape(b, r1, r2, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hp, wp)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(2, 3))
        return crop(x, h, w)


class DeformableAttention(nn.Module):
    """DAT++'s deformable multi-head attention (upstream ``DAttentionBaseline`` with position bias).

    Per group of channels, an offset network (depthwise k x k conv with stride s -> LN -> GELU -> 1x1 conv
    to (dy, dx)) on the queries predicts where to sample ceil(H/s) x ceil(W/s) keys/values from the input
    map (bilinear, align_corners=True); every query attends to all sampled keys, with a relative position
    bias read bilinearly from ``rpe_table`` at the query-to-key displacement.

    Input/output [B, C, H, W]. ``q_size`` (the map size at the pretraining resolution) only sets the bias
    table's size: the table is sampled in normalised coordinates, so any input size works.

    ``design`` DAT_VERSIONS["v1"] gives the original DAT's ``DAttentionBaseline`` (``centred_sampling``: offsets
    tanh-bounded to ``offset_range_factor / Hk``, or tanh of the position when the factor is < 0, key reference
    points and the query grid both at cell centres (i + 0.5) / n; ``resized_rpe``: the bias table viewed at the
    runtime (2H-1, 2W-1), resized bicubically at another size than the pretraining one, as LeapLabTHU/DAT issue #7
    advises).
    """

    def __init__(self, dim: int, heads: int, groups: int, q_size: int, stride: int, ksize: int,
                 offset_range_factor: float = -1.0, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 design: DATDesign = DAT_VERSIONS["pp"]):
        super().__init__()
        self.centred_sampling, self.resized_rpe = design.centred_sampling, design.resized_rpe
        if dim % heads or dim % groups or heads % groups:
            raise ValueError(f"DeformableAttention: dim {dim}, heads {heads} and groups {groups} must divide evenly")
        self.heads, self.groups = heads, groups
        self.head_dim, self.group_channels, self.group_heads = dim // heads, dim // groups, heads // groups
        self.scale = self.head_dim**-0.5
        self.offset_range_factor = offset_range_factor
        gc = self.group_channels
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, ksize, stride, ksize // 2 if ksize != stride else 0, groups=gc),
            LayerNormProxy(gc),
            nn.GELU(),
            nn.Conv2d(gc, 2, 1, 1, 0, bias=False),
        )
        self.proj_q, self.proj_k, self.proj_v, self.proj_out = (nn.Conv2d(dim, dim, 1) for _ in range(4))
        self.rpe_table = nn.Parameter(torch.zeros(heads, 2 * q_size - 1, 2 * q_size - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)

    @staticmethod
    def _grid(h: int, w: int, like: torch.Tensor, shift: float, minus: float) -> torch.Tensor:
        """[h, w, 2] (x, y) positions (i + shift) / (n - minus) * 2 - 1. DAT++ (kept for parity): key reference
        points at cell centres over n - 1 (shift 0.5, minus 1), queries at pixel indices (0, 1); original DAT:
        both at cell centres over n (0.5, 0)."""
        ys = (torch.arange(h, dtype=like.dtype, device=like.device) + shift) / (h - minus) * 2 - 1
        xs = (torch.arange(w, dtype=like.dtype, device=like.device) + shift) / (w - minus) * 2 - 1
        return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)

    def _key_positions(self, offset: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Offsets [B*G, 2 (dy, dx), Hk, Wk] -> sampling positions [B*G, Hk, Wk, 2] (x, y) in [-1, 1]: with a
        range factor, tanh(offset) * factor / (Hk - 1) (DAT++; also at factor 0) or / Hk (centred sampling, factor
        > 0); without, the positions are clamped (DAT++) or tanh-ed (centred sampling)."""
        hk, wk = offset.shape[-2:]
        centred, factor = self.centred_sampling, self.offset_range_factor
        if factor > 0 or (factor == 0 and not centred):
            denom = (hk, wk) if centred else (hk - 1.0, wk - 1.0)
            dy, dx = offset.tanh().split(1, dim=1)  # scaled by the Python floats 1 / denom (kept symbolic under
            offset = torch.cat([dy * (1.0 / denom[0]), dx * (1.0 / denom[1])], 1) * factor  # torch.export)
        pos = offset.flip(1).permute(0, 2, 3, 1) + self._grid(hk, wk, like, 0.5, 0.0 if centred else 1.0)
        if factor < 0:
            pos = pos.tanh() if centred else pos.clamp(-1.0, 1.0)
        return pos

    def _bias_table(self, h: int, w: int) -> torch.Tensor:
        """[heads, Th, Tw] position-bias table for an h x w query map: DAT++ samples its table in normalised
        coordinates at any size; with ``resized_rpe`` (v1) it is viewed at (2h-1, 2w-1), resized bicubically
        (LeapLabTHU/DAT issue #7) when trained at another size."""
        if not self.resized_rpe:
            return self.rpe_table
        return resize(self.rpe_table[None], (2 * h - 1, 2 * w - 1), mode="bicubic")[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bg = b * self.groups
        q = self.proj_q(x)
        offset = self.conv_offset(q.reshape(bg, self.group_channels, h, w))  # [B*G, 2 (dy, dx), Hk, Wk]
        pos = self._key_positions(offset, x)  # [B*G, Hk, Wk, 2] (x, y)
        sampled = F.grid_sample(x.reshape(bg, self.group_channels, h, w), pos, mode="bilinear", align_corners=True)
        ns = pos.shape[1] * pos.shape[2]
        sampled = sampled.reshape(b, c, 1, ns)
        q = q.reshape(b * self.heads, self.head_dim, h * w)
        k = self.proj_k(sampled).reshape(b * self.heads, self.head_dim, ns)
        v = self.proj_v(sampled).reshape(b * self.heads, self.head_dim, ns)
        attn = torch.einsum("bcm,bcn->bmn", q, k) * self.scale  # [B*heads, HW, Ns]
        centred = self.centred_sampling
        q_grid = self._grid(h, w, x, 0.5 if centred else 0.0, 0.0 if centred else 1.0).reshape(1, h * w, 1, 2)
        displacement = (q_grid - pos.reshape(bg, 1, ns, 2)) * 0.5  # [B*G, HW, Ns, 2] in (x, y)
        table = self._bias_table(h, w)
        table = table[None].expand(b, -1, -1, -1).reshape(bg, self.group_heads, *table.shape[-2:])
        bias = F.grid_sample(table, displacement, mode="bilinear", align_corners=True)  # [B*G, h_g, HW, Ns]
        attn = self.attn_drop((attn + bias.reshape(b * self.heads, h * w, ns)).softmax(dim=2))
        out = torch.einsum("bmn,bcn->bcm", attn, v).reshape(b, c, h, w)
        return self.proj_drop(self.proj_out(out))


class DATStage(nn.Module):
    """One stage: for each block, LPU residual, then x + DropPath(attn(LN(x))), x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, spec: str, heads: int, groups: int, q_size: int, stride: int, ksize: int,
                 offset_range_factor: float, nat_kernel_size: int, expansion: int, drop_path: list[float],
                 design: DATDesign = DAT_VERSIONS["pp"], window_size: int = 7):
        super().__init__()
        self.spec, self.local_perception = spec, design.local_perception
        if design.local_perception:
            self.local_perception_units = nn.ModuleList(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) for _ in spec)
        self.layer_norms = nn.ModuleList(LayerNormProxy(dim) for _ in range(2 * len(spec)))
        mlp = ConvMLP if design.conv_mlp else PlainMLP
        self.mlps = nn.ModuleList(mlp(dim, expansion) for _ in spec)
        attns = []
        for kind in spec:
            if kind == "N":
                attns.append(NeighborhoodAttentionCF(dim, nat_kernel_size, heads))
            elif kind == "D":
                attns.append(DeformableAttention(dim, heads, groups, q_size, stride, ksize, offset_range_factor,
                                                 design=design))
            elif kind in "LS":
                # "S" shifts by ceil(window / 2) (upstream TransformerStage; 4 for window 7, not Swin's 7 // 2 = 3)
                shift = -(-window_size // 2) if kind == "S" else 0
                attns.append(WindowAttention(dim, heads, window_size, shift=shift, fmap_size=q_size))
            else:
                raise ArgumentError("stage_spec", f"block type '{kind}' is not supported (use 'N', 'D', 'L' or 'S')")
        self.attns = nn.ModuleList(attns)
        self.drop_path = nn.ModuleList(DropPath(p) if p > 0 else nn.Identity() for p in drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for d in range(len(self.spec)):
            if self.local_perception:
                x = x + self.local_perception_units[d](x)
            x = x + self.drop_path[d](self.attns[d](self.layer_norms[2 * d](x)))
            x = x + self.drop_path[d](self.mlps[d](self.layer_norms[2 * d + 1](x)))
        return x


class DATClassifierHead(nn.Module):
    """Upstream DAT's (and DAT++'s) ImageNet classifier, key names as released (``cls_norm.norm``, ``cls_head``):
    ``cls_norm`` (LayerNorm over channels per position, eps 1e-5) -> global average pool -> dropout -> ``cls_head``.
    [N, C, h, w] -> logits [N, num_classes]."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.cls_norm = LayerNormProxy(channels)
        self.drop = nn.Dropout(dropout)
        self.cls_head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.drop(F.adaptive_avg_pool2d(self.cls_norm(x), 1).flatten(1)))


@BACKBONE_REGISTRY.register()
class DAT(Backbone):
    """DAT++ (``version="pp"``) or original DAT (``version="v1"``) dense-prediction backbone.

    forward(images [N, 3, H, W]) -> res2..res5 of sizes ceil(H/s) x ceil(W/s), channels ``dims``.
    DAT++: inputs with a side below 33 px are zero-padded to 33 (upstream returns NaN there) and cropped back.
    v1: the input is zero-padded to a multiple of 4 for the 4x4 stem and each map to an even size before the
    2x2 down projection (Swin's PatchEmbed / PatchMerging rule), so every size works.

    ``version``: a preset of DAT_VERSIONS or a :class:`DATDesign`; ``stage_spec``: the blocks of each stage, one
    letter per block (its length is the stage's depth); ``dims``: stage widths, each twice the last (the stem
    gives ``dims[0]``). Keys of released checkpoints are upstream's (``DAT.released``).
    """

    add_config = staticmethod(add_dat_config)
    released = ReleasedCheckpoint(
        # ImageNet files (LeapLabTHU/DAT {'model'}, classifier cls_norm / cls_head, DAT++ and the original DAT, the
        # latter with int64 relative_position_index / float attn_mask buffers) and mmseg / mmdet files
        # (LeapLabTHU/DAT-Segmentation / -Detection, backbone.*)
        signature=("patch_proj.0.weight",), classifier=r"^(cls_head|cls_norm)\.")
    classifier_head = DATClassifierHead

    def __init__(self, version: str | DATDesign = "pp", dims=(64, 128, 256, 512), heads=(2, 4, 8, 16),
                 groups=(1, 2, 4, 8), stage_spec=("ND", "NDND", "ND" * 9, "DD"), strides=(8, 4, 2, 1),
                 ksizes=(9, 7, 5, 3), offset_range_factor=(-1, -1, -1, -1), nat_kernel_size: int = 7,
                 expansion: int = 4, img_size: int = 224, drop_path_rate: float = 0.0, window_size: int = 7,
                 out_features=("res2", "res3", "res4", "res5"), use_checkpoint: bool = False):
        super().__init__()
        if not isinstance(version, DATDesign) and version not in DAT_VERSIONS:
            raise ArgumentError("version", f"must be one of {sorted(DAT_VERSIONS)}")
        self.design = design = version if isinstance(version, DATDesign) else DAT_VERSIONS[version]
        if any(dims[i + 1] != 2 * dims[i] for i in range(3)):
            raise ArgumentError("dims", "each stage must be twice as wide as the last")
        depths = [len(spec) for spec in stage_spec]
        if design.overlapping_embed:
            self.patch_proj = nn.Sequential(
                nn.Conv2d(3, dims[0] // 2, 3, 2, 1), LayerNormProxy(dims[0] // 2), nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], 3, 2, 1), LayerNormProxy(dims[0]),
            )
        else:
            self.patch_proj = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNormProxy(dims[0]))
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        for i in range(4):
            q_size = img_size // 4 // 2**i
            self.stages.append(DATStage(dims[i], stage_spec[i], heads[i], groups[i], q_size, strides[i], ksizes[i],
                                        offset_range_factor[i], nat_kernel_size, expansion,
                                        dpr[sum(depths[:i]):sum(depths[:i + 1])], design, window_size))
        k, p = (3, 1) if design.overlapping_embed else (2, 0)
        self.down_projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], k, 2, p, bias=False), LayerNormProxy(dims[i + 1]))
            for i in range(3)
        )
        names = ["res2", "res3", "res4", "res5"]
        # a level that is not returned has no norm, as upstream (RetinaNet checkpoints lack backbone.norms.0)
        self.norms = nn.ModuleList(LayerNormProxy(d) if n in out_features else nn.Identity()
                                   for n, d in zip(names, dims))
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(names, dims))
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(names)}
        self.use_checkpoint = use_checkpoint
        needs = []  # (stride, cells per side) each block kind needs for one export program
        for i, spec in enumerate(stage_spec):
            s = 4 * 2**i
            needs += [(s, nat_kernel_size)] if "N" in spec else []  # neighbourhood window inside the map
            needs += [(s, window_size + 1)] if set(spec) & {"L", "S"} else []  # 2 windows per side
            needs += [(s * max(1, strides[i]), 2)] if "D" in spec else []  # 2 sampled keys per side
        self._export_min_size = windows_min_size(*needs)

    @property
    def export_min_size(self) -> int:
        """Where no neighbourhood attention pads its map, every window layer has 2 windows per side and every
        deformable attention samples 2 keys per side (DAT-T++: 128; the original DAT-T: 256)."""
        return self._export_min_size

    @classmethod
    def from_config(cls, cfg, input_shape) -> DAT:
        return build_from_node(cls, cfg, "MODEL.DAT", out_features="MODEL.BACKBONE.OUT_FEATURES")

    def _stages(self, images: torch.Tensor):
        """Yield (stage index, its output [N, dims[i], h_i, w_i] before the norm, crop to ceil(H / s) x ceil(W / s))
        for the four stages in order."""
        h, w = images.shape[-2:]
        patches = not self.design.overlapping_embed  # non-overlapping patch convs: pad to their stride (Swin's rule)
        if patches:
            images = pad_to_multiple(images, 4)
        if not self.design.centred_sampling and min(h, w) < DAT_MIN_SIZE:
            images = F.pad(images, (0, max(0, DAT_MIN_SIZE - w), 0, max(0, DAT_MIN_SIZE - h)))
        x = self.patch_proj(images)
        for i, stage in enumerate(self.stages):
            x = checkpoint(stage, x, use_reentrant=False) if self.use_checkpoint and self.training else stage(x)
            s = 4 * 2**i
            yield i, x, (-(-h // s), -(-w // s))
            if i < 3:
                if patches:
                    x = pad_to_multiple(x, 2)
                x = self.down_projs[i](x)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        names = ["res2", "res3", "res4", "res5"]
        outs = {}
        for i, x, (h, w) in self._stages(images):
            if names[i] in self._out_features:
                outs[names[i]] = crop(self.norms[i](x), h, w)
            if names[i] == self._out_features[-1]:
                break
        return outs

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage's output before any norm, [N, dims[3], ceil(H / 32), ceil(W / 32)] (upstream's classifier
        input: ``cls_norm`` is the head's)."""
        *_, (_, x, (h, w)) = self._stages(images)
        return crop(x, h, w)

