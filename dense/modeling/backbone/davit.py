"""DaViT: Dual Attention Vision Transformers (Ding et al., ECCV 2022), dense-prediction form.

Built on timm's DaVit (``timm.models.davit``), which reproduces the official dense backbone
(dingmyu/davit, mmdet/mmseg ``DaViT``) on the golden data, plus what the dense form adds:

- ``norm0..norm3``: a LayerNorm (eps 1e-5, as official; timm's LayerNorm2d default is 1e-6) on every
  returned level (and only on those: the authors removed norm0 for their RetinaNet, which reads res3-res5);
- the official stochastic-depth schedule: linspace(0, rate, 2 * sum(depths)) over the spatial and channel
  sub-blocks (timm uses one rate per dual block);
- timm's stem, down-samplings and spatial (window) blocks with their padding written for torch.export
  (:class:`_Stem`, :class:`_Downsample`, :class:`_SpatialBlock`: the same operations and values, one program for
  every size of a dynamic range).

Keys: timm's (``stem.*``, ``stages.i.downsample.*``, ``stages.i.blocks.j.{0,1}.*``) plus ``norm{i}``; the
official checkpoints' names (``patch_embeds``, ``main_blocks``, ``cpe.0``) are converted on load by timm's own
``checkpoint_filter_fn``.

This file is the whole DaViT family: the model, its config node (:func:`add_davit_config`) and the rules of its
released checkpoints (``DaViT.released``).
"""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import DropPath, LayerNorm2d, NormMlpClassifierHead
from timm.models import davit as timm_davit

from ...checkpoint.released import ReleasedCheckpoint
from ...config.config import CfgNode as CN
from ..layers import drop_path_rates, pad_to_multiple, window_merge, window_partition
from ..registry_utils import build_from_node
from .backbone import Backbone, windows_min_size
from .build import BACKBONE_REGISTRY

__all__ = ["DaViT", "DaViTClassifierHead", "add_davit_config"]


def add_davit_config(cfg: CN) -> None:
    """MODEL.DAVIT: the keyword arguments of :class:`DaViT` (defaults: DaViT-T)."""
    cfg.MODEL.DAVIT = d = CN()
    d.EMBED_DIMS = [96, 192, 384, 768]  # channels of the four stages
    d.DEPTHS = [1, 1, 3, 1]  # dual (spatial + channel) blocks per stage
    d.NUM_HEADS = [3, 6, 12, 24]  # heads of the window attention = groups of the channel attention
    d.WINDOW_SIZE = 7  # spatial attention window
    d.MLP_RATIO = 4.0  # MLP expansion ratio
    d.DROP_PATH_RATE = 0.0  # stochastic depth over the 2 * sum(DEPTHS) sub-blocks (official schedule)
    d.USE_CHECKPOINT = False  # activation checkpointing of the blocks (saves memory in training)


def _official_to_timm(state_dict: dict, backbone: torch.nn.Module) -> tuple[dict, dict]:
    """Official names (dingmyu/davit: ``patch_embeds``, ``main_blocks``, ``cpe.0``) -> timm's, which dense keeps;
    timm hub files pass unchanged. The output norm of a level the backbone does not return is dropped with a reason:
    the authors' RetinaNet model (dingmyu/davit's DaViT as shipped) holds norm0 although its FPN starts at res3."""
    state_dict = timm_davit.checkpoint_filter_fn(state_dict, backbone)
    own = backbone.state_dict()
    dropped = {k: "output norm of a level this config does not return (MODEL.BACKBONE.OUT_FEATURES)"
               for k in state_dict if k.split(".")[0] in ("norm0", "norm1", "norm2", "norm3") and k not in own}
    return {k: v for k, v in state_dict.items() if k not in dropped}, dropped


class DaViTClassifierHead(torch.nn.Module):
    """The official DaViT ImageNet classifier in timm's form (``head`` = NormMlpClassifierHead; the official names
    ``norms`` / ``head`` become ``head.norm`` / ``head.fc`` on load, as in timm): global average pool -> LayerNorm
    (eps 1e-5, AFTER pooling) -> dropout -> Linear. [N, C, h, w] -> logits [N, num_classes]."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.head = NormMlpClassifierHead(channels, num_classes, pool_type="avg", drop_rate=dropout,
                                          norm_layer=partial(LayerNorm2d, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class _Stem(timm_davit.Stem):
    """timm's Stem (pad to a multiple of 4, 7x7 s4 conv, LayerNorm2d) with the padding as ceil(n / 4) * 4 - n."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(pad_to_multiple(x, self.stride)))


class _Downsample(timm_davit.Downsample):
    """timm's Downsample (LayerNorm2d, pad to the even kernel, 2x2 s2 conv) with the padding as ceil(n / 2) * 2 - n."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.conv(pad_to_multiple(x, self.conv.kernel_size) if self.even_k else x)


class _SpatialBlock(timm_davit.SpatialBlock):
    """timm's SpatialBlock (CPE, window attention over the map zero-padded to whole windows, CPE, MLP) with the
    windows of :func:`dense.modeling.layers.window_partition` / ``window_merge`` (sizes spelt for torch.export:
    ceil-div window counts, whose formulas the shape solver simplifies, and a crop that never asks whether anything
    was padded). [B, C, H, W] -> [B, C, H, W]; values equal timm's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = self.window_size[0]  # square: timm builds it from one int
        shortcut = self.cpe1(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        windows, padded = window_partition(self.norm1(shortcut).view(b, h, w, c), ws)
        x = shortcut + self.drop_path1(window_merge(self.attn(windows), ws, b, padded, (h, w)))
        x = self.cpe2(x.transpose(1, 2).view(b, c, h, w))
        if self.mlp is not None:
            x = x.flatten(2).transpose(1, 2)
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
            x = x.transpose(1, 2).view(b, c, h, w)
        return x


_EXPORTABLE = {timm_davit.Stem: _Stem, timm_davit.Downsample: _Downsample, timm_davit.SpatialBlock: _SpatialBlock}


@BACKBONE_REGISTRY.register()
class DaViT(Backbone):
    """forward(images [N, 3, H, W]) -> res2..res5 (strides 4..32, channels ``embed_dims``), any H, W:
    the stem pads to a multiple of 4, down-samplings pad to even sizes, windows pad to multiples of 7."""

    add_config = staticmethod(add_davit_config)
    released = ReleasedCheckpoint(
        # official ImageNet / mmdet / mmseg files (classifier norms / head) and timm hub weights (head.norm / head.fc)
        signature=("patch_embeds.0.proj.weight", "stem.conv.weight"), classifier=r"^(head|norms)\.",
        convert=_official_to_timm)
    classifier_head = DaViTClassifierHead

    def __init__(self, embed_dims=(96, 192, 384, 768), depths=(1, 1, 3, 1), num_heads=(3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 out_features=("res2", "res3", "res4", "res5"), use_checkpoint: bool = False):
        super().__init__()
        net = timm_davit.DaVit(depths=tuple(depths), embed_dims=tuple(embed_dims), num_heads=tuple(num_heads),
                         window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=True, norm_eps=1e-5,
                         attn_types=("spatial", "channel"), ffn=True, cpe_act=False, down_kernel_size=2,
                         channel_attn_v2=False, num_classes=0)
        for module in net.modules():  # same parameters and buffers; only forward differs
            if type(module) in _EXPORTABLE:
                module.__class__ = _EXPORTABLE[type(module)]
        self.stem, self.stages = net.stem, net.stages
        self._set_drop_path(drop_path_rate)
        names = ["res2", "res3", "res4", "res5"]
        for i, dim in enumerate(embed_dims):  # returned levels only: the RetinaNet releases have no norm0
            if names[i] in out_features:
                self.add_module(f"norm{i}", LayerNorm2d(dim, eps=1e-5))
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(names, embed_dims))
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(names)}
        self._export_min_size = windows_min_size(*((4 * 2**i, window_size + 1) for i in range(4)))
        if use_checkpoint:
            for stage in self.stages:
                stage.grad_checkpointing = True

    def _set_drop_path(self, rate: float) -> None:
        """Official schedule: sub-block k (spatial and channel counted separately) gets rate * k / (2n - 1)."""
        blocks = [sub for stage in self.stages for dual in stage.blocks for sub in dual]
        rates = drop_path_rates(rate, len(blocks))
        for sub, p in zip(blocks, rates):
            sub.drop_path1 = DropPath(p) if p > 0 else torch.nn.Identity()
            sub.drop_path2 = DropPath(p) if p > 0 else torch.nn.Identity()

    @property
    def export_min_size(self) -> int:
        """Every stage has windows: 2 per side at stride 32 (256 for windows of 7)."""
        return self._export_min_size

    @classmethod
    def from_config(cls, cfg, input_shape) -> DaViT:
        return build_from_node(cls, cfg, "MODEL.DAVIT", out_features="MODEL.BACKBONE.OUT_FEATURES")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        outs = {}
        for i, name in enumerate(["res2", "res3", "res4", "res5"]):
            x = self.stages[i](x)
            if name in self._out_features:
                outs[name] = getattr(self, f"norm{i}")(x)
            if name == self._out_features[-1]:
                break
        return outs

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Stage 4's output before any norm [N, embed_dims[3], ceil(H / 32), ceil(W / 32)] (the official classifier
        pools it, then normalises)."""
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return x
