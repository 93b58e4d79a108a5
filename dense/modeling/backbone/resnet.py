"""ResNet backbone (torchvision's implementation and key names: conv1, bn1, layer1..layer4).

This file is the whole ResNet family: the model, its config node (:func:`add_resnet_config`) and the rules of its
released checkpoints (``ResNet.released``: torchvision's ImageNet files, and Detectron2's ResNet layout, e.g. in
Mask2Former's model zoo).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ...checkpoint.layouts import apply_rules
from ...checkpoint.released import ReleasedCheckpoint
from ...config.config import CfgNode as CN
from ..layers import freeze_batchnorm, get_norm
from ..registry_utils import ArgumentError, build_from_node
from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["ResNet", "ResNetClassifierHead", "add_resnet_config"]


def add_resnet_config(cfg: CN) -> None:
    """MODEL.RESNETS: the keyword arguments of :class:`ResNet` (defaults: ResNet-50)."""
    cfg.MODEL.RESNETS = r = CN()
    r.DEPTH = 50  # 18, 34, 50, 101 or 152 (torchvision ResNet layout and key names)
    r.NORM = "BN"  # "BN", "SyncBN", "FrozenBN" or "GN"
    r.WIDTH_PER_GROUP = 64  # base width of the bottleneck (64 = ResNet)
    r.ZERO_INIT_RESIDUAL = False  # zero-init the last norm of every residual branch


# Detectron2's ResNet names (stem, res2..res5, shortcut, conv*.norm) -> torchvision's
_DETECTRON2_RULES = [
    (r"^stem\.conv1\.norm\.", "bn1."),
    (r"^stem\.conv1\.", "conv1."),
    (r"^res(\d)\.(\d+)\.conv(\d)\.norm\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}."),
    (r"^res(\d)\.(\d+)\.conv(\d)\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}."),
    (r"^res(\d)\.(\d+)\.shortcut\.norm\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.1."),
    (r"^res(\d)\.(\d+)\.shortcut\.", lambda m: f"layer{int(m[1]) - 1}.{m[2]}.downsample.0."),
]


def _from_detectron2(state_dict: dict, backbone: nn.Module) -> tuple[dict, dict]:
    """Detectron2's ResNet layout -> torchvision's; torchvision's names pass unchanged."""
    return {apply_rules(_DETECTRON2_RULES, k): v for k, v in state_dict.items()}, {}

_ARCHS = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}


class ResNetClassifierHead(nn.Module):
    """torchvision's ResNet classifier, key names as released (``fc``): global average pool -> dropout -> ``fc``.
    [N, C, h, w] -> logits [N, num_classes]."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.mean(dim=(2, 3))))


@BACKBONE_REGISTRY.register()
class ResNet(Backbone):
    """torchvision ResNet-{18,34,50,101,152} returning res2..res5 (strides 4, 8, 16, 32).

    Key names equal torchvision's classification checkpoints minus ``fc`` (``conv1``, ``bn1``,
    ``layer1.0.conv1``, ...), so ImageNet weights load directly.
    """

    add_config = staticmethod(add_resnet_config)
    released = ReleasedCheckpoint(signature=("layer1.0.conv1.weight", "stem.conv1.weight"), classifier=r"^fc\.",
                                  convert=_from_detectron2)
    classifier_head = ResNetClassifierHead

    def __init__(self, depth: int = 50, norm: str = "BN", out_features=("res2", "res3", "res4", "res5"),
                 freeze_at: int = 0, width_per_group: int = 64, zero_init_residual: bool = False):
        super().__init__()
        if depth not in _ARCHS:
            raise ArgumentError("depth", f"must be one of {sorted(_ARCHS)}")
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
            raise ArgumentError("out_features", f"ResNet has no features {sorted(unknown)}; it provides {names}")
        self._out_feature_channels = {n: 64 * 2**i * expansion for i, n in enumerate(names)}
        self._out_feature_strides = {n: 4 * 2**i for i, n in enumerate(names)}
        self._freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape) -> ResNet:
        return build_from_node(cls, cfg, "MODEL.RESNETS", out_features="MODEL.BACKBONE.OUT_FEATURES",
                               freeze_at="MODEL.BACKBONE.FREEZE_AT")

    def _freeze(self, freeze_at: int) -> None:
        """Freeze the stem (freeze_at >= 1) and the stages res2..res{freeze_at} (freeze_at >= 2):
        no gradients, and their BatchNorms become FrozenBatchNorm2d (fixed statistics)."""
        stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
        for name in [n for stage in stages[:freeze_at] for n in stage]:
            module = freeze_batchnorm(getattr(self, name))
            for p in module.parameters():
                p.requires_grad_(False)
            setattr(self, name, module)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """layer4's output [N, 512 * expansion, ~H/32, ~W/32]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

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
