"""The Backbone contract shared by every dense backbone."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ...checkpoint.released import ReleasedCheckpoint

__all__ = ["ShapeSpec", "Backbone", "windows_min_size"]


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a feature map: channels and stride relative to the input image."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None


def windows_min_size(*stride_extent: tuple[int, int]) -> int:
    """:attr:`Backbone.export_min_size` of a backbone whose maps at ``stride`` need ``extent`` cells (or more) per
    side for its layers to run one program (a window layer of window w: w + 1, i.e. 2 windows; a neighbourhood
    attention of kernel k: k): the largest stride * extent, rounded up to a multiple of 32, at least 64."""
    need = max([64] + [stride * extent for stride, extent in stride_extent])
    return -(-need // 32) * 32


class Backbone(nn.Module, metaclass=ABCMeta):
    """Base class of dense backbones.

    ``forward(images [N, 3, H, W]) -> {"res2": [N, C2, ~H/4, ~W/4], ..., "res5": [N, C5, ~H/32, ~W/32]}``
    (the names listed in ``self._out_features``). Any H, W must work: a backbone pads internally when
    an attention window needs it and crops the outputs back. ``size_divisibility`` tells the
    meta-architecture what to pad batched inputs to (0 = nothing needed).

    A family declares, beside its code (all optional):

    - ``add_config``: ``add_<family>_config(cfg)``, which adds the family's config node (``MODEL.<FAMILY>``, the
      constructor's keyword arguments upper-cased, each with its default and a comment); ``get_cfg()`` collects it
      from every registered backbone;
    - ``released``: a :class:`dense.checkpoint.ReleasedCheckpoint`, the rules of the papers' released files;
    - ``lr_layer_id(name)`` and ``num_lr_layers``: its layer rule for layer-wise lr decay (SOLVER.LAYER_DECAY);
    - ``classifier_head``: ``(channels, num_classes, dropout) -> nn.Module``, the head of its released ImageNet
      classification model (submodule names as released), fed by :meth:`forward_features`; the
      ``ImageClassifier`` meta-architecture puts the two together.
    """

    add_config: ClassVar[Callable | None] = None
    released: ClassVar[ReleasedCheckpoint | None] = None
    classifier_head: ClassVar[Callable[[int, int, float], nn.Module] | None] = None

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    @abstractmethod
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage [N, C, ~H/32, ~W/32] as the family's ImageNet classification model hands it to its
        ``classifier_head`` (without the dense outputs' norms); C = :attr:`num_features`."""
        raise NotImplementedError(f"{type(self).__name__} has no classification form (forward_features)")

    @property
    def num_features(self) -> int:
        """Channels of :meth:`forward_features`' output (the last stage's)."""
        return self._out_feature_channels["res5"]

    @property
    def size_divisibility(self) -> int:
        return 0

    @property
    def export_min_size(self) -> int:
        """The smallest image side (a multiple of 32) from which one ``torch.export`` program with dynamic height and
        width holds for every larger side (dense.export raises the range's minimum to it). PyTorch traces a size of
        1 and padding that is or is not needed as different programs: 64 keeps the stride-32 map 2 cells wide;
        families with windows raise it to where every window layer has at least 2 windows per side and every
        neighbourhood window fits the map (:func:`windows_min_size`)."""
        return 64

    @property
    def padding_constraints(self) -> dict[str, int]:
        """Detectron2's padding constraints: {"size_divisibility": int, "square_size": int}."""
        return {"size_divisibility": self.size_divisibility, "square_size": 0}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
