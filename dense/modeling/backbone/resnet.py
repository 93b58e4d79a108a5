"""ResNet backbone (torchvision's implementation and key names: conv1, bn1, layer1..layer4)."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ..layers import freeze_batchnorm, get_norm
from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["ResNet"]

_ARCHS = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}


@BACKBONE_REGISTRY.register()
class ResNet(Backbone):
    """torchvision ResNet-{18,34,50,101,152} returning res2..res5 (strides 4, 8, 16, 32).

    Key names equal torchvision's classification checkpoints minus ``fc`` (``conv1``, ``bn1``,
    ``layer1.0.conv1``, ...), so ImageNet weights load directly.
    """

    def __init__(self, depth: int = 50, norm: str = "BN", out_features=("res2", "res3", "res4", "res5"),
                 freeze_at: int = 0, width_per_group: int = 64, zero_init_residual: bool = False):
        super().__init__()
        if depth not in _ARCHS:
            raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(_ARCHS)}, got {depth}")
        block, layers = _ARCHS[depth]
        net = tv_resnet.ResNet(block, layers, width_per_group=width_per_group,
                               norm_layer=lambda c: get_norm(norm, c), zero_init_residual=zero_init_residual)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = block.expansion
        names = ["res2", "res3", "res4", "res5"]
        self._out_features = list(out_features)
        unknown = set(self._out_features) - set(names)
        if unknown:
            raise ValueError(f"ResNet has no features {sorted(unknown)}; it provides {names}")
        self._out_feature_channels = {n: 64 * 2**i * expansion for i, n in enumerate(names)}
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(names)}
        self._freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape) -> "ResNet":
        r = cfg.MODEL.RESNETS
        return cls(depth=r.DEPTH, norm=r.NORM, out_features=cfg.MODEL.BACKBONE.OUT_FEATURES,
                   freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT, width_per_group=r.WIDTH_PER_GROUP,
                   zero_init_residual=r.ZERO_INIT_RESIDUAL)

    def _freeze(self, freeze_at: int) -> None:
        """Freeze the stem (freeze_at >= 1) and the stages res2..res{freeze_at} (freeze_at >= 2):
        no gradients, and their BatchNorms become FrozenBatchNorm2d (fixed statistics)."""
        stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
        for name in [n for stage in stages[:freeze_at] for n in stage]:
            module = freeze_batchnorm(getattr(self, name))
            for p in module.parameters():
                p.requires_grad_(False)
            setattr(self, name, module)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        outs = {}
        for name, layer in zip(["res2", "res3", "res4", "res5"], [self.layer1, self.layer2, self.layer3, self.layer4]):
            x = layer(x)
            if name in self._out_features:
                outs[name] = x
            if name == self._out_features[-1]:
                break
        return outs
