"""Deployable forms of dense models: ``torch.export`` programs and ONNX files of a model's inference.

Each supported meta-architecture has an *export module* (EXPORT_REGISTRY, by meta-architecture name) that takes a
pre-normalised batch ``images [1, 3, H, W]`` (PixelNormalizer's output: (RGB or BGR pixel - mean) / std) and
returns the task's tensors:

    SemanticSegmentor   logits [1, K, H, W] in the config's test mode (whole or slide), before any resize to an
                        original image size

Height and width are dynamic (multiples of ``size_multiple`` from ``min_size`` up to ``max_size``) where the
model allows it. ONNX goes through ``torch.onnx.export(..., dynamo=True)`` with every dense op on its reference
backend, so the file holds standard ONNX operators only (GridSample, Gather, ...) and a stock onnxruntime runs it.
"""
from __future__ import annotations

import torch
from fvcore.common.registry import Registry
from torch import nn
from torch.export import Dim

from .ops import use_backend
from .utils.registry import register_as

__all__ = ["EXPORT_REGISTRY", "export_module", "export_program", "export_onnx"]

EXPORT_REGISTRY = Registry("EXPORT")
EXPORT_REGISTRY.__doc__ = "meta-architecture name -> its export module (model -> nn.Module of images [1, 3, H, W])"


@register_as(EXPORT_REGISTRY, "SemanticSegmentor")
class SemanticSegmentorExport(nn.Module):
    """images [1, 3, H, W] (normalised) -> logits [1, K, H, W] (TEST.MODE whole or slide)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.single_scale(images[0])[None]


def export_module(model: nn.Module) -> nn.Module:
    """The export module of ``model`` (in eval mode); an error names the meta-architectures that have one."""
    name = type(model).__name__
    if name not in EXPORT_REGISTRY:
        have = ", ".join(sorted(k for k, _ in EXPORT_REGISTRY))
        raise NotImplementedError(f"no export form for {name} yet (have: {have})")
    return EXPORT_REGISTRY.get(name)(model.eval()).eval()


def _dynamic_shapes(min_size: int, max_size: int, multiple: int):
    h = Dim("height", min=max(1, -(-min_size // multiple)), max=max_size // multiple)
    w = Dim("width", min=max(1, -(-min_size // multiple)), max=max_size // multiple)
    return ({2: multiple * h, 3: multiple * w},)


def export_program(model: nn.Module, images: torch.Tensor, dynamic: bool = True, min_size: int = 64,
                   max_size: int = 2048, size_multiple: int = 32) -> torch.export.ExportedProgram:
    """``torch.export`` of the model's export module traced on ``images`` [1, 3, H, W]; with ``dynamic``, height and
    width are multiples of ``size_multiple`` in [min_size, max_size] (H and W of ``images`` must be too)."""
    module = export_module(model)
    shapes = _dynamic_shapes(min_size, max_size, size_multiple) if dynamic else None
    with torch.no_grad():
        return torch.export.export(module, (images,), dynamic_shapes=shapes)


def export_onnx(model: nn.Module, images: torch.Tensor, path: str, dynamic: bool = True, min_size: int = 64,
                max_size: int = 2048, size_multiple: int = 32) -> None:
    """An ONNX file of the model's export module (opset 18), the dense ops lowered through their reference
    implementations to standard operators."""
    module = export_module(model)
    shapes = _dynamic_shapes(min_size, max_size, size_multiple) if dynamic else None
    with torch.no_grad(), use_backend("reference"):
        program = torch.onnx.export(module, (images,), dynamo=True, dynamic_shapes=shapes, input_names=["images"],
                                    output_names=["outputs"], optimize=True)
    program.save(path)
