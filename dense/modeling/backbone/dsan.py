"""DSAN ("DSAN: Exploring the Relationship between Deformable Convolution and Spatial Attention", Yu, Zhang, Zhao,
Xiao; TechRxiv 10.36227/techrxiv.171328860), dense-prediction form.

The backbone of MarcYugo/DSAN-Deformable-Spatial-Attention (mmseg/mmdet ``DSAN``): a VAN-style ConvNet of four
stages. Stage i embeds with a strided conv + BatchNorm (``patch_embed{i}``: 7x7 stride 4, then 3x3 stride 2),
runs its blocks (``block{i}.{j}``) and normalises with a LayerNorm over channels (``norm{i}``); the four stage
outputs are res2..res5 (strides 4, 8, 16, 32, sizes ceil(H / s) x ceil(W / s); no padding constraints).

A block is VAN's, with the large-kernel attention's dilated depthwise conv replaced by a deformable strip pair:

    x = x + layer_scale_1 * DSA(BN(x)),  DSA = proj_1 -> GELU -> spatial_gating_unit -> proj_2, + shortcut
    x = x + layer_scale_2 * MLP(BN(x)),  MLP = fc1 -> dwconv (3x3) -> GELU -> fc2
    spatial_gating_unit(u) = u * conv(dscn_y(dscn_x(a, a), a)),  a = conv0(u) (5x5 depthwise)

where ``dscn_x`` / ``dscn_y`` (:class:`dense.ops.DSCNX` / :class:`~dense.ops.DSCNY`) sample 1 x K / K x 1 strips
whose per-group offsets are predicted from ``a``. Module and key names equal upstream's, so released checkpoints
load without renaming.

Two settings depend on the checkpoint, not on the variant:

- the stage LayerNorm eps: 1e-5 in upstream's dense backbone (what its seg/det models were trained and
  evaluated with, also when fine-tuned from ImageNet weights), 1e-6 in its ImageNet classification model;
- the DSCN offset groups per stage: the S model of ``ham_dsan_s_ade20k_160k.py`` uses 2 stage-1 groups where
  every other S file has 4 (see :func:`groups_in_state_dict`); a file of other groups fails to load with the
  MODEL.DSAN.GROUPS that fits it (``DSAN.released``'s mismatch hint).

This file is the whole DSAN family: the model, its config node (:func:`add_dsan_config`) and the rules of its
released checkpoints (``DSAN.released``; upstream's key names are dense's).
"""
from __future__ import annotations

import math
import re

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...checkpoint.released import ReleasedCheckpoint
from ...config.config import CfgNode as CN
from ...ops import DSCNX, DSCNY
from ..layers import drop_path_rates, get_norm
from ..registry_utils import ArgumentError, build_from_node
from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["DSAN", "DSANClassifierHead", "groups_in_state_dict", "add_dsan_config"]


def add_dsan_config(cfg: CN) -> None:
    """MODEL.DSAN: the keyword arguments of :class:`DSAN` (defaults: DSAN-T as upstream's seg/det configs build it)."""
    cfg.MODEL.DSAN = d = CN()
    d.EMBED_DIMS = [32, 64, 160, 256]  # channels of the four stages
    d.DEPTHS = [3, 3, 5, 2]  # blocks per stage
    d.MLP_RATIOS = [8, 8, 4, 4]  # MLP expansion ratio per stage
    d.KERNEL_SIZES = [11, 11, 7, 5]  # DSCN strip length K per stage (odd; padded by (K - 1) / 2)
    d.DW_KERNEL_SIZES = [11, 11, 7, 5]  # strip depthwise conv of the offset branch per stage (odd)
    d.GROUPS = [1, 4, 8, 8]  # DSCN offset groups per stage, as in the checkpoint (S ADE20K 160k: [2, 8, 16, 16])
    d.NORM = "SyncBN"  # patch-embedding and block norm: "SyncBN" (upstream; BN on one process), "BN", "FrozenBN"
    d.NORM_EPS = 1e-5  # stage LayerNorm eps: 1e-5 seg/det (also fine-tuning); 1e-6 = the ImageNet classifier
    d.DROP_PATH_RATE = 0.1  # stochastic depth, linear over all blocks (upstream's seg/det configs: 0.1)
    d.USE_CHECKPOINT = False  # activation checkpointing per stage (saves memory in training)

_OFFSET_KEY = re.compile(r"(?:^|\.)block(\d)\.\d+\.attn\.spatial_gating_unit\.dscn_[xy]\.offset\.(?:weight|bias)$")


class OverlapPatchEmbed(nn.Module):
    """Strided conv (kernel ``patch_size``, padding ``patch_size // 2``) + BatchNorm.
    [N, C_in, H, W] -> [N, C, ceil(H / stride), ceil(W / stride)]."""

    def __init__(self, in_channels: int, channels: int, patch_size: int, stride: int, norm: str):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, channels, patch_size, stride, patch_size // 2)
        self.norm = get_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class DSCNPair(nn.Module):
    """DSAN's spatial gating unit: u * conv(dscn_y(dscn_x(a), a)) with a = conv0(u), the strips' offsets both
    predicted from a. [N, C, H, W] -> [N, C, H, W] (K odd, padding (K - 1) / 2, so sizes are kept)."""

    def __init__(self, channels: int, kernel_size: int, dw_kernel_size: int, group: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        pad = (kernel_size - 1) // 2
        self.dscn_x = DSCNX(channels, kernel_size, dw_kernel_size, stride=1, pad=pad, dilation=1, group=group)
        self.dscn_y = DSCNY(channels, kernel_size, dw_kernel_size, stride=1, pad=pad, dilation=1, group=group)
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        a = self.conv0(u)
        attn = self.dscn_y(self.dscn_x(a.permute(0, 2, 3, 1), a), a)  # channels-last [N, H, W, C]
        return u * self.conv(attn.permute(0, 3, 1, 2))


class DSA(nn.Module):
    """Deformable spatial attention: proj_1 -> GELU -> spatial_gating_unit -> proj_2, plus the input.
    [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channels: int, kernel_size: int, dw_kernel_size: int, group: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = DSCNPair(channels, kernel_size, dw_kernel_size, group)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Module):
    """3x3 depthwise conv with bias (key ``dwconv.dwconv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    """1x1 conv C -> rC, 3x3 depthwise conv, GELU, 1x1 conv rC -> C (no dropout: 0 in every DSAN config)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """x + ls1 * DropPath(DSA(BN(x))), then + ls2 * DropPath(MLP(BN(x))). [N, C, H, W] -> [N, C, H, W]."""

    LAYER_SCALE_INIT = 1e-2  # upstream's layer_scale_init_value

    def __init__(self, channels: int, kernel_size: int, dw_kernel_size: int, group: int, mlp_ratio: float,
                 drop_path: float, norm: str):
        super().__init__()
        self.norm1 = get_norm(norm, channels)
        self.attn = DSA(channels, kernel_size, dw_kernel_size, group)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = get_norm(norm, channels)
        self.mlp = Mlp(channels, int(channels * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((channels,), self.LAYER_SCALE_INIT))
        self.layer_scale_2 = nn.Parameter(torch.full((channels,), self.LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def _groups_hint(mismatched: list[tuple[str, tuple, tuple]], backbone: DSAN) -> str:
    """Why a checkpoint's tensors do not fit, when it is the DSCN offset groups: the MODEL.DSAN.GROUPS that the
    checkpoint's offset layers imply (``mismatched``: (key, checkpoint shape, model shape)), else ""."""
    if not mismatched or not all(_OFFSET_KEY.search(k) for k, _, _ in mismatched):
        return ""
    kernel_sizes, groups = backbone.kernel_sizes, backbone.groups
    implied = {i: g for i, g in groups_in_state_dict({k: a for k, a, _ in mismatched}, kernel_sizes).items()
               if g != groups[i]}
    if not implied:
        return ""
    fix = [implied.get(i, g) for i, g in enumerate(groups)]
    stages = ", ".join(f"stage {i + 1}: {g} groups x {kernel_sizes[i]} kernel points"
                       for i, g in sorted(implied.items()))
    return (f"These are DSCN offset layers of other offset groups ({stages}; MODEL.DSAN.GROUPS is {groups}): set "
            f"MODEL.DSAN.GROUPS {fix} to load the checkpoint. MODEL.WEIGHTS_SKIP_MISMATCH instead leaves them at "
            f"initialisation, as upstream's ham_dsan_s_ade20k_160k.py did with the 4-group ImageNet S weights.")


def groups_in_state_dict(shapes: dict, kernel_sizes) -> dict[int, int]:
    """{stage index (0-3): DSCN offset groups} implied by a checkpoint's ``...dscn_{x,y}.offset.{weight,bias}``
    shapes (``{key: shape}``, any key prefix): rows = groups x kernel points. Stages whose rows are not a multiple of
    the stage's kernel size (another variant's checkpoint) are left out."""
    found = {}
    for key, shape in shapes.items():
        m = _OFFSET_KEY.search(key)
        if m:
            stage = int(m.group(1)) - 1
            if 0 <= stage < len(kernel_sizes) and shape[0] % kernel_sizes[stage] == 0:
                found[stage] = shape[0] // kernel_sizes[stage]
    return found


class DSANClassifierHead(nn.Module):
    """Upstream DSAN's ImageNet classifier (its final norm is the backbone's stage norm ``norm4``): mean over the
    positions -> dropout -> ``head`` (Linear). [N, C, h, w] -> logits [N, num_classes]."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)
        trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(x.mean(dim=(2, 3))))


@BACKBONE_REGISTRY.register()
class DSAN(Backbone):
    """DSAN dense-prediction backbone (upstream's mmseg/mmdet ``DSAN``; the ImageNet model minus its head).

    forward(images [N, 3, H, W]) -> res2..res5 of sizes ceil(H / s) x ceil(W / s) (s = 4, 8, 16, 32),
    channels ``embed_dims``; any H, W.

    ``kernel_sizes`` (odd): DSCN strip length K per stage (padding (K - 1) / 2 keeps sizes);
    ``dw_kernel_sizes``: the offset branch's strip conv; ``groups``: DSCN offset groups (channels / groups
    per group); ``norm``: BatchNorm of the patch embeddings and blocks (SyncBN = BN on one process);
    ``norm_eps``: stage LayerNorm eps (1e-5 dense checkpoints, 1e-6 the classification model).
    """

    add_config = staticmethod(add_dsan_config)
    released = ReleasedCheckpoint(
        # ImageNet dsan_{t,t2,s}.pth.tar (timm CheckpointSaver: {'state_dict', 'epoch', 'arch', 'args': Namespace},
        # classifier head), the dsan_{t,s}_encoder.pth init files (the same without head) and mmseg / mmdet files
        signature=("block1.0.attn.spatial_gating_unit.dscn_x.offset.weight",), classifier=r"^head\.",
        mismatch_hint=_groups_hint)
    classifier_head = DSANClassifierHead

    def __init__(self, embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4),
                 kernel_sizes=(11, 11, 7, 5), dw_kernel_sizes=(11, 11, 7, 5), groups=(1, 4, 8, 8),
                 norm: str = "SyncBN", norm_eps: float = 1e-5, drop_path_rate: float = 0.0,
                 out_features=("res2", "res3", "res4", "res5"), use_checkpoint: bool = False):
        super().__init__()
        for name, value in (("depths", depths), ("mlp_ratios", mlp_ratios), ("kernel_sizes", kernel_sizes),
                            ("dw_kernel_sizes", dw_kernel_sizes), ("groups", groups)):
            if len(value) != len(embed_dims):
                raise ArgumentError(name, f"needs one entry per stage of `embed_dims` {list(embed_dims)}")
        for name, value in (("kernel_sizes", kernel_sizes), ("dw_kernel_sizes", dw_kernel_sizes)):
            if any(k % 2 == 0 for k in value):
                raise ArgumentError(name, "must be odd: the strips are padded by (K - 1) / 2 so that every block "
                                          "keeps its input size")
        if any(dim % g for dim, g in zip(embed_dims, groups)):
            raise ArgumentError("groups", f"must divide `embed_dims` {list(embed_dims)}")
        self.kernel_sizes, self.groups = list(kernel_sizes), list(groups)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        for i, dim in enumerate(embed_dims):
            in_channels = 3 if i == 0 else embed_dims[i - 1]
            self.add_module(f"patch_embed{i + 1}", OverlapPatchEmbed(in_channels, dim, 7 if i == 0 else 3,
                                                                     4 if i == 0 else 2, norm))
            start = sum(depths[:i])
            self.add_module(f"block{i + 1}", nn.ModuleList(
                Block(dim, kernel_sizes[i], dw_kernel_sizes[i], groups[i], mlp_ratios[i], dpr[start + j], norm)
                for j in range(depths[i])))
            self.add_module(f"norm{i + 1}", nn.LayerNorm(dim, eps=norm_eps))
        names = ["res2", "res3", "res4", "res5"]
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(names, embed_dims))
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(names)}
        self.use_checkpoint = use_checkpoint
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Upstream's initialisation without pretrained weights: Linear trunc-normal(0.02), LayerNorm 1 / 0,
        conv normal(0, sqrt(2 / fan_out)) with fan_out = k_h * k_w * C_out / groups, biases 0."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, cfg, input_shape) -> DSAN:
        return build_from_node(cls, cfg, "MODEL.DSAN", out_features="MODEL.BACKBONE.OUT_FEATURES")

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """patch_embed{i+1}, blocks, norm{i+1}: [N, C_in, H, W] -> [N, C, ceil(H / s), ceil(W / s)]."""
        x = getattr(self, f"patch_embed{i + 1}")(x)
        for blk in getattr(self, f"block{i + 1}"):
            x = blk(x)
        return getattr(self, f"norm{i + 1}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Stage 4 after its norm ``norm4`` [N, embed_dims[3], ceil(H / 32), ceil(W / 32)] (upstream's classifier
        averages it)."""
        x = images
        for i in range(len(self.kernel_sizes)):
            x = checkpoint(self._stage, i, x, use_reentrant=False) if self.use_checkpoint and self.training \
                else self._stage(i, x)
        return x

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outs, x = {}, images
        for i, name in enumerate(["res2", "res3", "res4", "res5"]):
            if self.use_checkpoint and self.training:
                x = checkpoint(self._stage, i, x, use_reentrant=False)
            else:
                x = self._stage(i, x)
            if name in self._out_features:
                outs[name] = x
            if name == self._out_features[-1]:
                break
        return outs
