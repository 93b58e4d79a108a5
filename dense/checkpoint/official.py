"""Converters from released checkpoints (ImageNet classification, mmseg/mmdet, torchvision) to dense's
key layout, chosen automatically by DenseCheckpointer.

A converter is a class registered in CHECKPOINT_CONVERTERS with

- ``matches(state_dict, model) -> bool``: whether it recognises this checkpoint for this model;
- ``convert(state_dict, model) -> (state_dict, dropped)``: the state dict in the model's names, and
  ``{original key: why it is not loaded}`` for keys deliberately left out (e.g. a classifier).

Converters are tried in registration order; the first that matches converts.
"""
from __future__ import annotations

from fvcore.common.registry import Registry
from torch import nn

__all__ = ["CHECKPOINT_CONVERTERS", "find_converter", "unwrap_model"]

CHECKPOINT_CONVERTERS = Registry("CHECKPOINT_CONVERTER")


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def find_converter(state_dict: dict, model: nn.Module):
    """The first registered converter that recognises ``state_dict`` for ``model``, or None."""
    for _, cls in CHECKPOINT_CONVERTERS:
        conv = cls()
        if conv.matches(state_dict, model):
            return conv
    return None


@CHECKPOINT_CONVERTERS.register()
class TorchvisionResNet:
    """torchvision ImageNet ResNet checkpoints (``conv1``, ``layer1.0.conv1``, ``fc``) -> ``backbone.*``."""

    def matches(self, state_dict: dict, model: nn.Module) -> bool:
        from ..modeling.backbone.resnet import ResNet

        backbone = getattr(unwrap_model(model), "backbone", None)
        return isinstance(backbone, ResNet) and "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict

    def convert(self, state_dict: dict, model: nn.Module) -> tuple[dict, dict]:
        out, dropped = {}, {}
        for k, v in state_dict.items():
            if k.startswith("fc."):
                dropped[k] = "ImageNet classifier (not part of a dense model)"
            else:
                out["backbone." + k] = v
        return out, dropped
