"""The R-CNN box classifier / regressor as mmdetection's ``Shared2FCBBoxHead``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FCBBoxHead"]


class FCBBoxHead(nn.Module):
    """mmdet ``ConvFCBBoxHead`` with ``num_fc`` shared fully connected layers (Shared2FCBBoxHead: 2 x 1024).

    ``forward(roi features [R, C, S, S])`` -> (class logits [R, K + 1], background last as in mmdet; box deltas
    [R, 4K], class k at columns 4k..4k+3). Keys: ``shared_fcs.i``, ``fc_cls``, ``fc_reg``. Init as mmdet: Xavier
    (uniform) fully connected layers, fc_cls N(0, 0.01), fc_reg N(0, 0.001), zero biases.
    """

    def __init__(self, in_channels: int, resolution: int, num_classes: int, fc_dim: int = 1024, num_fc: int = 2):
        super().__init__()
        dims = [in_channels * resolution * resolution] + [fc_dim] * num_fc
        self.shared_fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.fc_cls = nn.Linear(dims[-1], num_classes + 1)
        self.fc_reg = nn.Linear(dims[-1], 4 * num_classes)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        for fc in [*self.shared_fcs, self.fc_cls, self.fc_reg]:
            nn.init.zeros_(fc.bias)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)
