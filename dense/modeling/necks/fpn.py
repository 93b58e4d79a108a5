"""Feature Pyramid Network with mmdet/mmseg's structure and key names (``lateral_convs.i.conv``,
``fpn_convs.i.conv``), so the necks of released mmseg/mmdet checkpoints load unchanged."""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbone.backbone import ShapeSpec
from ..layers import ConvNormAct
from ..registry_utils import ArgumentError, build_from_node
from .build import NECK_REGISTRY

__all__ = ["FPN"]


@NECK_REGISTRY.register()
class FPN(nn.Module):
    """FPN (Lin et al. 2017) as mmdet's ``FPN``.

    Input: backbone features ``in_features`` (e.g. res2..res5, strides 4..32). Output: ``num_outs``
    maps of ``out_channels`` named ``p{log2(stride)}`` (p2..p5, plus p6/p7 for extra levels).
    Extra levels come from max-pooling the last output (``add_extra_convs=""``) or from stride-2
    3x3 convs on the last backbone input ("on_input"), lateral ("on_lateral") or output ("on_output").
    Top-down pathway: nearest upsampling to the finer map's exact size.
    """

    def __init__(self, input_shape: dict[str, ShapeSpec], in_features: list[str], out_channels: int = 256,
                 num_outs: int = 4, start_level: int = 0, add_extra_convs: str = "", norm: str = "",
                 relu_before_extra_convs: bool = False):
        super().__init__()
        if add_extra_convs not in ("", "on_input", "on_lateral", "on_output"):
            raise ArgumentError("add_extra_convs", "must be '', 'on_input', 'on_lateral' or 'on_output'")
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ArgumentError("in_features", f"{missing} are not produced by the backbone (it provides "
                                               f"{list(input_shape)})")
        self.in_features = list(in_features)[start_level:]
        in_channels = [input_shape[f].channels for f in self.in_features]
        strides = [input_shape[f].stride for f in self.in_features]
        self.num_outs = num_outs
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        n_in = len(self.in_features)
        if num_outs < n_in:
            raise ArgumentError("num_outs", f"must be >= the number of used inputs ({n_in}: `in_features` from "
                                            f"`start_level`)")
        self.lateral_convs = nn.ModuleList(ConvNormAct(c, out_channels, 1, norm=norm, activation=False)
                                           for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, padding=1, norm=norm, activation=False) for _ in in_channels
        )
        if add_extra_convs:
            for i in range(num_outs - n_in):
                c_in = in_channels[-1] if (i == 0 and add_extra_convs == "on_input") else out_channels
                self.fpn_convs.append(ConvNormAct(c_in, out_channels, 3, stride=2, padding=1, norm=norm,
                                                  activation=False))
        self._out_features = []
        self._out_shapes = {}
        for i in range(num_outs):
            stride = strides[i] if i < n_in else strides[-1] * 2 ** (i - n_in + 1)
            name = f"p{int(math.log2(stride))}"
            self._out_features.append(name)
            self._out_shapes[name] = ShapeSpec(channels=out_channels, stride=stride)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> FPN:
        return build_from_node(functools.partial(cls, input_shape), cfg, "MODEL.FPN")

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._out_shapes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = [features[f] for f in self.in_features]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]
        n_in = len(laterals)
        if self.num_outs > n_in:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - n_in):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {"on_input": inputs[-1], "on_lateral": laterals[-1],
                          "on_output": outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[n_in](source))
                for i in range(n_in + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return dict(zip(self._out_features, outs))
