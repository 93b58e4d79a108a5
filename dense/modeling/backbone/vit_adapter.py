"""ViT-Adapter: Vision Transformer Adapter for Dense Predictions (Chen et al., ICLR 2023), dense form.

The backbones of czczup/ViT-Adapter (``ViTAdapter`` and ``BEiTAdapter`` of segmentation/mmseg_custom and
detection/mmdet_custom): a plain ViT trunk and an adapter that gives it a feature pyramid.

- Trunk (``MODEL.VIT_ADAPTER.BASE``): "vit" = DeiT / AugReg blocks (absolute ``pos_embed`` resized bicubically
  to every input, layer scale ``gamma1``/``gamma2`` starting at 1) or "beit" = BEiT blocks (``q_bias``/``v_bias``,
  per-block relative position bias table, layer scale ``gamma_1``/``gamma_2``). Blocks attend globally or in
  windows (``WINDOW_SIZE``, the detection configs).
- Adapter: a spatial prior module (conv stem + stride-2 convs) gives c1 (stride 4) and tokens c2, c3, c4
  (strides 8, 16, 32, plus a level embedding). Interaction i: an injector (multi-scale deformable attention,
  the ViT tokens query c2..c4) adds the spatial prior into the ViT tokens, the ViT blocks of stage i run, an
  extractor (deformable attention, c queries the ViT tokens) + ConvFFN updates c; the last interaction has two
  extra extractors. Then c1 = ConvTranspose(c2) + c1, the ViT tokens are added to the four levels and a
  BatchNorm per level gives res2..res5 (strides 4, 8, 16, 32, all ``EMBED_DIM`` channels).
- Which ViT tokens are added (``VIT_FEATURE``): "stages" = interaction i's output to level i (mmseg
  ViTAdapter / BEiTAdapter, mmdet BEiTAdapter version 'old'); "final" = the last output to every level (mmdet
  ViTAdapter, BEiTAdapter version 'new'). The published numbers were obtained with the form of their codebase.

Any input size works: images are zero-padded to a multiple of 32 (upstream needs multiples of 32) and the
outputs cropped back to ceil(H/s) x ceil(W/s). The BEiT whole-image relative position tables are resampled
at run time when the token grid differs from the training crop (upstream runs only at the crop size).
Module and key names equal upstream's: released mmseg/mmdet checkpoints load without renaming; ImageNet
DeiT, AugReg and BEiT checkpoints are converted on load (``ViTAdapter.released``; BEiT tables of another size are
resized with dense/modeling/backbone/beit_rel_pos.py).

This file is the whole ViT-Adapter family: the model, its config node (:func:`add_vit_adapter_config`), the rules
of its released checkpoints and its layer-wise learning-rate rule (:func:`vit_layer_id`).

The blocks are written here, not taken from timm: timm's ViT and BEiT blocks are not told the token grid
(so no windowed attention), fix their relative position tables at construction and name the DeiT layer
scale ``ls1.gamma``. timm supplies the patch embedding, MLP, DropPath and trunc_normal_.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.utils.checkpoint import checkpoint

from ...checkpoint.released import ReleasedCheckpoint
from ...config.config import CfgNode as CN
from ...ops import MSDeformAttn
from ...ops.ms_deform_attn import level_tensors
from ..layers import drop_path_rates, get_norm, resize, window_merge, window_partition
from ..registry_utils import ArgumentError, build_from_node
from .backbone import Backbone, windows_min_size
from .beit_rel_pos import CLS_ENTRIES, resample_table_2d, resize_rel_pos_table
from .build import BACKBONE_REGISTRY

__all__ = ["ViTAdapter", "add_vit_adapter_config", "vit_layer_id", "PATCH_SIZE", "SIZE_DIVISOR"]

PATCH_SIZE = 16  # every released ViT-Adapter; the adapter's token grid is the stride-16 level
SIZE_DIVISOR = 32  # the stride-32 level must tile the image exactly (upstream: ResizeToMultiple(32))
LN_EPS = 1e-6  # upstream norm_layer = partial(nn.LayerNorm, eps=1e-6) in the trunk and the adapter


def add_vit_adapter_config(cfg: CN) -> None:
    """MODEL.VIT_ADAPTER: the keyword arguments of :class:`ViTAdapter` (defaults: ViT-Adapter-T on DeiT-T,
    segmentation form)."""
    cfg.MODEL.VIT_ADAPTER = v = CN()
    v.BASE = "vit"  # ViT trunk: "vit" (DeiT / AugReg blocks, abs. pos_embed) or "beit" (rel. pos. bias)
    v.IMG_SIZE = 224  # training size of the position tables: ViT pos_embed grid / BEiT whole-image table
    v.EMBED_DIM = 192  # ViT width = channels of every output level
    v.DEPTH = 12  # ViT blocks (also the layers of layer-wise lr decay, SOLVER.LAYER_DECAY)
    v.NUM_HEADS = 3  # ViT attention heads
    v.MLP_RATIO = 4.0  # ViT MLP expansion ratio
    v.DROP_PATH_RATE = 0.1  # stochastic depth, linear over the blocks; the extractors use the full rate
    v.INIT_VALUES = 0.0  # start of the injectors' gamma and BEiT's layer scale (1e-6 for BEiT)
    v.WINDOW_SIZE = []  # per-block attention window, 0 = global; empty = all global (seg configs)
    v.CONV_INPLANE = 64  # width of the spatial prior module's stem
    v.N_POINTS = 4  # sampling points per head and level of the deformable attentions
    v.DEFORM_NUM_HEADS = 6  # heads of the injector/extractor deformable attentions
    v.DEFORM_RATIO = 1.0  # deformable-attention value width = DEFORM_RATIO * EMBED_DIM
    v.CFFN_RATIO = 0.25  # hidden width of the extractors' ConvFFN = CFFN_RATIO * EMBED_DIM
    v.WITH_CFFN = True  # ConvFFN after every extractor
    v.USE_EXTRA_EXTRACTOR = True  # 2 extra extractors in the last interaction (all but "light")
    v.INTERACTION_INDEXES = [[0, 2], [3, 5], [6, 8], [9, 11]]  # [first, last] block per interaction
    v.ADD_VIT_FEATURE = True  # add the ViT tokens to the four pyramid levels
    v.VIT_FEATURE = "stages"  # ViT tokens added: "stages" = stage i to level i (seg), "final" = last (det)
    v.NORM = "SyncBN"  # norm of the spatial prior module and the outputs (BN on one process)
    v.USE_CHECKPOINT = False  # activation checkpointing of blocks, injectors, extractors (saves memory, same results)
    cfg.register_renamed_key("MODEL.VIT_ADAPTER.WITH_CP", "MODEL.VIT_ADAPTER.USE_CHECKPOINT",
                             "activation checkpointing has one name in every family")


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer of a ViT-Adapter parameter (name inside the backbone) for layer-wise lr decay, as upstream's
    LayerDecayOptimizerConstructor: the embeddings are layer 0, ``blocks.i`` layer i + 1, everything else (the
    adapter) the last layer, num_layers + 1."""
    if name.startswith(("cls_token", "mask_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def _from_released(state_dict: dict, backbone: ViTAdapter) -> tuple[dict, dict]:
    """Released ImageNet / mmseg / mmdet keys (no prefix) -> the backbone's: a shared BEiT ``rel_pos_bias`` table
    is copied to every block, ``relative_position_index`` buffers are dropped (the model computes them for each
    input size), tables of another size are resized to the model's as upstream's loader does (geometric-progression
    cubic spline; windowed detection tables lose the class-token entries), and the class token (when this trunk
    has none) and BEiT's masked-image-modelling parts are dropped."""
    out, dropped = {}, {}
    for key, value in state_dict.items():
        if key.endswith("relative_position_index"):
            dropped[key] = "index buffer: the model computes it for each input size"
        elif key == "rel_pos_bias.relative_position_bias_table":
            dropped[key] = "shared BEiT table: copied to every block's attn.relative_position_bias_table"
            for i in range(len(backbone.blocks)):
                out.setdefault(f"blocks.{i}.attn.relative_position_bias_table", value)
        elif key == "cls_token" and backbone.cls_token is None:
            dropped[key] = "class token: this ViT-Adapter trunk has none"
        elif key == "mask_token" or key.startswith("lm_head."):
            dropped[key] = "BEiT masked-image-modelling pre-training part (not part of a dense model)"
        else:
            out[key] = value
    own = backbone.state_dict()
    for key, value in out.items():
        target = own.get(key)
        if (key.endswith("attn.relative_position_bias_table") and target is not None
                and value.shape != target.shape and value.shape[1:] == target.shape[1:]):
            out[key] = resize_rel_pos_table(value, target.shape[0])
    return out, dropped


# ------------------------------------------------------------------------------------------------------
# BEiT relative position index
# ------------------------------------------------------------------------------------------------------
def _rel_pos_index(h: int, w: int, with_cls: bool, device: torch.device) -> torch.Tensor:
    """:func:`_rel_pos_index_table`, cached per grid size in eager mode (a trace must not cache its fake tensors,
    nor hash symbolic sizes)."""
    if torch.compiler.is_compiling():
        return _rel_pos_index_table(h, w, with_cls, device)
    return _cached_rel_pos_index(h, w, with_cls, device)


def _rel_pos_index_table(h: int, w: int, with_cls: bool, device: torch.device) -> torch.Tensor:
    """[N, N] int64 rows of the (2h-1) x (2w-1) table (+ 3 cls entries) for query/key pairs of an h x w grid
    (N = h*w, + 1 with the class token first), BEiT's layout: (dy + h - 1) * (2w - 1) + dx + w - 1."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    index = (ys[:, None] - ys[None, :] + h - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)
    if not with_cls:
        return index
    n = (2 * h - 1) * (2 * w - 1)
    full = torch.empty(h * w + 1, h * w + 1, dtype=torch.long, device=device)
    full[1:, 1:] = index
    full[0, :] = n  # cls -> token
    full[:, 0] = n + 1  # token -> cls
    full[0, 0] = n + 2  # cls -> cls
    return full


_cached_rel_pos_index = functools.lru_cache(maxsize=8)(_rel_pos_index_table)


# ------------------------------------------------------------------------------------------------------
# ViT trunk
# ------------------------------------------------------------------------------------------------------
def _attention(qkv: torch.Tensor, heads: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention on packed projections: qkv [B, N, 3C] (+ additive bias [heads, N, N]) -> [B, N, C]."""
    b, n, c3 = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
    return out.transpose(1, 2).reshape(b, n, c3 // 3)


class ViTAttention(nn.Module):
    """DeiT/AugReg multi-head self-attention over the token grid, global or in ``window_size`` windows
    (upstream ``WindowedAttention``: q, k, v are zero-padded to whole windows after the projection).

    forward(x [B, H*W, C], hw = (H, W)) -> [B, H*W, C]
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 0):
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        qkv = self.qkv(x)
        if not self.window_size:
            return self.proj(_attention(qkv, self.num_heads))
        windows, padded = window_partition(qkv.view(x.shape[0], *hw, -1), self.window_size)
        out = window_merge(_attention(windows, self.num_heads), self.window_size, x.shape[0], padded, hw)
        return self.proj(out)


class BEiTAttention(nn.Module):
    """BEiT multi-head self-attention: q and v biases (k has none), a learned relative position bias per head.

    Two forms, as upstream:
    - global (``windowed=False``, segmentation): tokens = [cls, H*W grid]; the table covers the displacements
      of a ``grid`` x ``grid`` token map (the training crop / 16) + 3 cls entries, and is resampled to the
      input's (H, W) at run time when they differ (:func:`rel_pos_resample_matrix`);
    - windowed (detection): ``grid`` x ``grid`` windows without a cls token; the normalised tokens are
      zero-padded to whole windows before the projection (so padded keys carry ``v_bias``, as upstream).

    forward(x [B, (1 +) H*W, C], hw = (H, W)) -> same shape
    """

    def __init__(self, dim: int, num_heads: int, grid: int, windowed: bool):
        super().__init__()
        self.num_heads, self.grid, self.windowed = num_heads, grid, windowed
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        rows = (2 * grid - 1) ** 2 + (0 if windowed else CLS_ENTRIES)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads))
        self.proj = nn.Linear(dim, dim)

    def _bias(self, h: int, w: int) -> torch.Tensor:
        """[heads, N, N] additive attention bias for an h x w token grid (+ the cls token when global)."""
        table = self.relative_position_bias_table
        trained_grid = statically_known_true(h == self.grid) and statically_known_true(w == self.grid)  # no guard
        if not self.windowed and not trained_grid:
            side = 2 * self.grid - 1
            core = resample_table_2d(table[:side * side].view(side, side, -1), 2 * h - 1, 2 * w - 1)
            table = torch.cat([core.reshape(-1, self.num_heads), table[side * side:]])
        index = _rel_pos_index(h, w, not self.windowed, table.device)
        return table[index.view(-1)].view(*index.shape, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        bias_qkv = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        if not self.windowed:
            out = _attention(F.linear(x, self.qkv.weight, bias_qkv), self.num_heads, self._bias(*hw))
            return self.proj(out)
        windows, padded = window_partition(x.view(x.shape[0], *hw, -1), self.grid)
        out = _attention(F.linear(windows, self.qkv.weight, bias_qkv), self.num_heads, self._bias(self.grid, self.grid))
        return self.proj(window_merge(out, self.grid, x.shape[0], padded, hw))


class ViTBlock(nn.Module):
    """Pre-norm transformer block with layer scale:
    x + DropPath(gamma1 * attn(LN(x))), then x + DropPath(gamma2 * MLP(LN(x))). forward(x, hw) -> x."""

    gamma_names = ("gamma1", "gamma2")

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop_path: float, init_values: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        for name in self.gamma_names:
            self.register_parameter(name, nn.Parameter(torch.full((dim,), float(init_values))))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        g1, g2 = (getattr(self, name) for name in self.gamma_names)
        x = x + self.drop_path(g1 * self.attn(self.norm1(x), hw))
        return x + self.drop_path(g2 * self.mlp(self.norm2(x)))


class BEiTBlock(ViTBlock):
    """The same block with BEiT's layer-scale names."""

    gamma_names = ("gamma_1", "gamma_2")


# ------------------------------------------------------------------------------------------------------
# Adapter
# ------------------------------------------------------------------------------------------------------
class SpatialPriorModule(nn.Module):
    """Conv stem (3x3 s2, 3x3, 3x3, maxpool s2) and three 3x3 s2 convs, each + norm + ReLU, projected to
    ``embed_dim`` by 1x1 convs ``fc1..fc4``. forward(x [B, 3, H, W]) -> (c1 [B, D, H/4, W/4], c2 [B, HW/64, D],
    c3 [B, HW/256, D], c4 [B, HW/1024, D])."""

    def __init__(self, inplanes: int, embed_dim: int, norm: str):
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), get_norm(norm, cout), nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(*conv(3, inplanes, 2), *conv(inplanes, inplanes, 1), *conv(inplanes, inplanes, 1),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*conv(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*conv(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*conv(4 * inplanes, 4 * inplanes, 2))
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Conv2d(c, embed_dim, 1) for c in
                                                  (inplanes, 2 * inplanes, 4 * inplanes, 4 * inplanes))

    def forward(self, x: torch.Tensor):
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        tokens = [fc(c).flatten(2).transpose(1, 2) for fc, c in ((self.fc2, c2), (self.fc3, c3), (self.fc4, c4))]
        return (self.fc1(c1), *tokens)


class DWConv(nn.Module):
    """3x3 depthwise conv applied to each pyramid level's token map with shared weights.
    forward(x [B, N2 + N3 + N4, C], level_shapes [(h, w)] * 3) -> same shape."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, level_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        b, _, c = x.shape
        levels = x.split([h * w for h, w in level_shapes], dim=1)
        return torch.cat([self.dwconv(t.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
                          for t, (h, w) in zip(levels, level_shapes)], dim=1)


class ConvFFN(nn.Module):
    """fc1 (D -> hidden) -> per-level depthwise 3x3 conv -> GELU -> fc2 (hidden -> D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, level_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), level_shapes)))


class _DeformInputs:
    """Reference points [1, Lq, 1, 2] (pixel centres, (x, y) in [0, 1]), spatial shapes [L, 2] and level start
    indices [L] of one deformable attention (upstream ``deform_inputs``)."""

    def __init__(self, query_shapes: Sequence[tuple[int, int]], value_shapes: Sequence[tuple[int, int]],
                 device: torch.device):
        refs = []
        for h, w in query_shapes:
            ys, xs = torch.meshgrid((torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
                                    (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w, indexing="ij")
            refs.append(torch.stack([xs.flatten(), ys.flatten()], -1))
        self.reference_points = torch.cat(refs)[None, :, None]
        self.value_shapes = [(h, w) for h, w in value_shapes]  # the same as Python ints: no host reads in the op
        self.spatial_shapes, self.level_start_index = level_tensors(self.value_shapes, device)


class Injector(nn.Module):
    """x + gamma * MSDeformAttn(LN(x) queries, LN(c) values over the 3 pyramid levels). gamma starts at
    ``init_values`` (0 for DeiT/AugReg: the injector starts as a no-op and the pretrained ViT is intact)."""

    def __init__(self, dim: int, num_heads: int, n_points: int, deform_ratio: float, init_values: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = MSDeformAttn(d_model=dim, n_levels=3, n_heads=num_heads, n_points=n_points, ratio=deform_ratio)
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor, c: torch.Tensor, inputs: _DeformInputs) -> torch.Tensor:
        attn = self.attn(self.query_norm(x), inputs.reference_points, self.feat_norm(c), inputs.spatial_shapes,
                         inputs.level_start_index, level_shapes=inputs.value_shapes)
        return x + self.gamma * attn


class Extractor(nn.Module):
    """c + MSDeformAttn(LN(c) queries, LN(x) values on the stride-16 grid), then (with_cffn)
    c + DropPath(ConvFFN(LN(c)))."""

    def __init__(self, dim: int, num_heads: int, n_points: int, deform_ratio: float, with_cffn: bool,
                 cffn_ratio: float, drop_path: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.feat_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = MSDeformAttn(d_model=dim, n_levels=1, n_heads=num_heads, n_points=n_points, ratio=deform_ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
            self.ffn_norm = nn.LayerNorm(dim, eps=LN_EPS)
            self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, c: torch.Tensor, x: torch.Tensor, inputs: _DeformInputs,
                level_shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        c = c + self.attn(self.query_norm(c), inputs.reference_points, self.feat_norm(x), inputs.spatial_shapes,
                          inputs.level_start_index, level_shapes=inputs.value_shapes)
        if self.with_cffn:
            c = c + self.drop_path(self.ffn(self.ffn_norm(c), level_shapes))
        return c


class InteractionBlock(nn.Module):
    """Injector -> the stage's ViT blocks -> extractor (+ 2 extra extractors in the last interaction).
    With a class token (segmentation BEiT) it joins the tokens for the blocks only."""

    def __init__(self, dim: int, num_heads: int, n_points: int, deform_ratio: float, init_values: float,
                 with_cffn: bool, cffn_ratio: float, drop_path: float, extra_extractor: bool,
                 use_checkpoint: bool):
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, deform_ratio, init_values)
        self.extractor = Extractor(dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio, drop_path)
        self.extra_extractors = nn.ModuleList(
            Extractor(dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio, drop_path)
            for _ in range(2 if extra_extractor else 0))
        self.use_checkpoint = use_checkpoint

    def _run(self, fn, *args):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(self, x, c, cls, blocks, injector_inputs, extractor_inputs, hw, level_shapes):
        """x [B, H*W, D] ViT tokens on the hw grid, c [B, N2 + N3 + N4, D] pyramid tokens of level_shapes,
        cls [B, 1, D] or None -> updated (x, c, cls)."""
        x = self._run(self.injector, x, c, injector_inputs)
        if cls is not None:
            x = torch.cat([cls, x], dim=1)
        for blk in blocks:
            x = self._run(blk, x, hw)
        if cls is not None:
            cls, x = x[:, :1], x[:, 1:]
        for extractor in [self.extractor, *self.extra_extractors]:
            c = self._run(extractor, c, x, extractor_inputs, level_shapes)
        return x, c, cls


# ------------------------------------------------------------------------------------------------------
# Backbone
# ------------------------------------------------------------------------------------------------------
@BACKBONE_REGISTRY.register()
class ViTAdapter(Backbone):
    """ViT-Adapter on a DeiT/AugReg ("vit") or BEiT ("beit") trunk.

    forward(images [N, 3, H, W]) -> res2..res5 [N, embed_dim, ceil(H/s), ceil(W/s)], s = 4, 8, 16, 32, any H, W.

    Args:
        base: "vit" or "beit". img_size: training resolution that sizes the position tables (ViT: pos_embed grid
        img_size/16, upstream pretrain_size; BEiT: the whole-image relative position table; unused by windowed
        BEiT blocks, whose tables cover their windows). embed_dim, depth, num_heads, mlp_ratio: the ViT.
        drop_path_rate: stochastic depth, linear over the blocks; the extractors use the full rate.
        init_values: start value of the injectors' gamma and of BEiT's layer scale (ViT blocks start at 1).
        window_size: per block, 0 = global attention (empty = all global). conv_inplane: SPM width.
        n_points, deform_num_heads, deform_ratio: the deformable attentions. cffn_ratio, with_cffn: ConvFFN.
        use_extra_extractor: 2 more extractors in the last interaction (every released variant but "light").
        interaction_indexes: [first, last] block of each interaction, covering all blocks in order.
        add_vit_feature, vit_feature: add the ViT tokens to the pyramid, per "stages" or the "final" tokens.
        norm: norm of the SPM and of the outputs (upstream SyncBN). use_checkpoint: activation checkpointing.
    """

    add_config = staticmethod(add_vit_adapter_config)
    released = ReleasedCheckpoint(
        # mmseg / mmdet files (state_dict, backbone.*; upstream's names are dense's) and the ImageNet files the configs
        # start from: DeiT ({'model'}), AugReg (ViT-Adapter's release files, timm names), BEiT / BEiT v2 ({'model'}).
        # DeiT / AugReg files lack the layer scales blocks.*.gamma1/gamma2, which stay at 1.0, as upstream.
        signature=("blocks.0.attn.qkv.weight",), classifier=r"^(head|head_dist|norm|fc_norm)\.|^dist_token$",
        convert=_from_released)

    def __init__(self, base: str = "vit", img_size: int = 224, embed_dim: int = 192, depth: int = 12,
                 num_heads: int = 3, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, init_values: float = 0.0,
                 window_size: Sequence[int] = (), conv_inplane: int = 64, n_points: int = 4,
                 deform_num_heads: int = 6, deform_ratio: float = 1.0, cffn_ratio: float = 0.25,
                 with_cffn: bool = True, use_extra_extractor: bool = True,
                 interaction_indexes: Sequence[Sequence[int]] = ((0, 2), (3, 5), (6, 8), (9, 11)),
                 add_vit_feature: bool = True, vit_feature: str = "stages", norm: str = "SyncBN",
                 out_features=("res2", "res3", "res4", "res5"), use_checkpoint: bool = False):
        super().__init__()
        window_size = list(window_size) or [0] * depth
        self._check(base, img_size, depth, window_size, interaction_indexes, add_vit_feature, vit_feature)
        self.base, self.vit_feature, self.add_vit_feature = base, vit_feature, add_vit_feature
        self.interaction_indexes = [tuple(idx) for idx in interaction_indexes]
        grid = img_size // PATCH_SIZE
        self.patch_embed = PatchEmbed(img_size=None, patch_size=PATCH_SIZE, embed_dim=embed_dim, output_fmt="NCHW")
        dpr = drop_path_rates(drop_path_rate, depth)
        if base == "vit":
            self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))  # slot 0 (cls) is unused
            self.cls_token = None
            self.blocks = nn.ModuleList(
                ViTBlock(embed_dim, ViTAttention(embed_dim, num_heads, window_size[i]), mlp_ratio, dpr[i], 1.0)
                for i in range(depth))
        else:
            windowed = window_size[0] > 0
            self.pos_embed = None
            self.cls_token = None if windowed else nn.Parameter(torch.zeros(1, 1, embed_dim))
            tables = window_size if windowed else [grid] * depth  # the token map each table covers
            self.blocks = nn.ModuleList(
                BEiTBlock(embed_dim, BEiTAttention(embed_dim, num_heads, tables[i], windowed), mlp_ratio, dpr[i],
                          init_values)
                for i in range(depth))
        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.spm = SpatialPriorModule(conv_inplane, embed_dim, norm)
        self.interactions = nn.ModuleList(
            InteractionBlock(embed_dim, deform_num_heads, n_points, deform_ratio, init_values, with_cffn, cffn_ratio,
                             drop_path_rate, use_extra_extractor and i == len(interaction_indexes) - 1,
                             use_checkpoint)
            for i in range(len(interaction_indexes)))
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        for i in range(1, 5):
            self.add_module(f"norm{i}", get_norm(norm, embed_dim))
        names = ["res2", "res3", "res4", "res5"]
        self._out_features = list(out_features)
        self._out_feature_channels = {n: embed_dim for n in names}
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(names)}
        self._export_min_size = windows_min_size(*((PATCH_SIZE, w + 1) for w in window_size if w))
        self._init_weights()

    @property
    def export_min_size(self) -> int:
        """64, or where every windowed block has 2 windows per side of the stride-16 token map (the detection
        configs' windows of 14: 256; BEiT-L's windows of 56: 928)."""
        return self._export_min_size

    @staticmethod
    def _check(base, img_size, depth, window_size, interaction_indexes, add_vit_feature, vit_feature):
        if base not in ("vit", "beit"):
            raise ArgumentError("base", "must be 'vit' (DeiT/AugReg) or 'beit'")
        if img_size % PATCH_SIZE:
            raise ArgumentError("img_size", f"must be a multiple of {PATCH_SIZE}")
        if len(window_size) != depth:
            raise ArgumentError("window_size", f"needs one entry per block (`depth` {depth}; 0 = global) or none")
        if base == "beit" and len({w > 0 for w in window_size}) > 1:
            raise ArgumentError("window_size", "BEiT blocks are either all global (segmentation form, with class "
                                               "token) or all windowed (detection form); got a mix")
        expected = 0
        for first, last in interaction_indexes:
            if first != expected or last < first:
                break
            expected = last + 1
        if expected != depth or any(len(idx) != 2 for idx in interaction_indexes):
            raise ArgumentError("interaction_indexes", f"must split blocks 0..{depth - 1} into consecutive "
                                                       f"[first, last] ranges")
        if vit_feature not in ("stages", "final"):
            raise ArgumentError("vit_feature", "must be 'stages' or 'final'")
        if add_vit_feature and vit_feature == "stages" and len(interaction_indexes) != 4:
            raise ArgumentError("vit_feature", f"'stages' adds interaction i's tokens to level i and needs 4 "
                                               f"interactions, got {len(interaction_indexes)} (`interaction_indexes`); "
                                               f"use 'final' or `add_vit_feature` False")

    def _init_weights(self) -> None:
        """Upstream's initialisation: Linear trunc-normal(0.02), norms 1/0, convs He-normal on fan-out,
        deformable attentions Deformable DETR's, level embedding N(0, 1), position parameters trunc-normal(0.02)
        (the trunk is meant to be loaded from an ImageNet checkpoint)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        for p in (self.pos_embed, self.cls_token):
            if p is not None:
                trunc_normal_(p, std=0.02)
        nn.init.normal_(self.level_embed)

    @classmethod
    def from_config(cls, cfg, input_shape) -> ViTAdapter:
        return build_from_node(cls, cfg, "MODEL.VIT_ADAPTER", out_features="MODEL.BACKBONE.OUT_FEATURES")

    @property
    def num_lr_layers(self) -> int:
        """Layers of layer-wise lr decay: the blocks (the embeddings are layer 0, the adapter the last + 1)."""
        return len(self.blocks)

    def lr_layer_id(self, name: str) -> int:
        """Layer (0 .. num_lr_layers + 1) of parameter ``name`` (inside the backbone) for layer-wise lr decay."""
        return vit_layer_id(name, self.num_lr_layers)

    @property
    def size_divisibility(self) -> int:
        return SIZE_DIVISOR

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = images.shape[-2:]
        x = F.pad(images, (0, -w % SIZE_DIVISOR, 0, -h % SIZE_DIVISOR))
        hp, wp = x.shape[-2:]
        levels = [(hp // s, wp // s) for s in (8, 16, 32)]  # c2, c3 (= the ViT token grid), c4
        injector_inputs = _DeformInputs(levels[1:2], levels, x.device)
        extractor_inputs = _DeformInputs(levels, levels[1:2], x.device)

        c1, c2, c3, c4 = self.spm(x)
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)
        tokens = self.patch_embed(x)
        bs, dim, gh, gw = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)
        if self.pos_embed is not None:
            grid = math.isqrt(self.pos_embed.shape[1] - 1)
            pos = self.pos_embed[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
            tokens = tokens + resize(pos, (gh, gw), mode="bicubic").flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(bs, -1, -1) if self.cls_token is not None else None

        vit_maps = []
        for (first, last), interaction in zip(self.interaction_indexes, self.interactions):
            tokens, c, cls = interaction(tokens, c, cls, self.blocks[first:last + 1], injector_inputs,
                                         extractor_inputs, (gh, gw), levels)
            if self.add_vit_feature and self.vit_feature == "stages":
                vit_maps.append(tokens.transpose(1, 2).reshape(bs, dim, gh, gw))
        if self.add_vit_feature and self.vit_feature == "final":
            vit_maps = [tokens.transpose(1, 2).reshape(bs, dim, gh, gw)] * 4

        c2, c3, c4 = c.split([a * b for a, b in levels], dim=1)
        c2, c3, c4 = (t.transpose(1, 2).reshape(bs, dim, a, b) for t, (a, b) in zip((c2, c3, c4), levels))
        pyramid = [self.up(c2) + c1, c2, c3, c4]
        if self.add_vit_feature:
            pyramid = [p + resize(v, p.shape[-2:]) for p, v in zip(pyramid, vit_maps)]

        outs = {}
        for i, name in enumerate(["res2", "res3", "res4", "res5"]):
            if name in self._out_features:
                s = self._out_feature_strides[name]
                outs[name] = getattr(self, f"norm{i + 1}")(pyramid[i])[..., : -(-h // s), : -(-w // s)]
        return outs
