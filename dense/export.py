"""Deployable forms of dense models: ``torch.export`` programs and ONNX files of a model's inference.

Each supported meta-architecture has an *export module* (EXPORT_REGISTRY, by meta-architecture name) that takes a
pre-normalised batch ``images [1, 3, H, W]`` (PixelNormalizer's output: (RGB or BGR pixel - mean) / std) and
returns the task's tensors:

    SemanticSegmentor   logits [1, K, H, W] in the config's test mode (whole or slide), before any resize to an
                        original image size
    MaskFormer          sem_seg [1, K, H, W] (semantic scores in the config's test mode), class_logits
                        [1, Q, K + 1] and mask_logits [1, Q, Hp / 4, Wp / 4] of the whole image padded to the size
                        divisibility (Hp, Wp): what panoptic and instance inference read (their score thresholds,
                        ranking and overlap rules have data-dependent output sizes and stay outside the program)
    GeneralizedRCNN     boxes [D, 4] (XYXY, input pixels), scores [D], classes [D] and, with MODEL.MASK_ON,
                        mask_probs [D, M, M] (the predicted class's mask in its box; paste it into the image with
                        dense.structures.masks.paste_masks_in_image)
    RetinaNet           boxes [D, 4], scores [D], classes [D]

Detections have a data-dependent count D (score threshold, NMS): the programs hold them as unbacked sizes.

One program holds from a smallest side up (an export module's ``min_size``, which raises the one asked for):
PyTorch traces a size of 1, and padding that is or is not needed, as different programs. It is the backbone's
``export_min_size`` (64; where window layers have 2 windows per side: DaViT-T and DAT-T 256, DAT-T++ 128,
ViT-Adapter detection configs 256, BEiT-L's 56-token windows 928) and, for detectors, the coarsest FPN level's stride
+ 32 (RetinaNet's P7: 160; Mask R-CNN's P6: 96).

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
from .structures import ImageList
from .utils.registry import register_as

__all__ = ["EXPORT_REGISTRY", "export_module", "export_program", "export_onnx"]

EXPORT_REGISTRY = Registry("EXPORT")
EXPORT_REGISTRY.__doc__ = "meta-architecture name -> its export module (model -> nn.Module of images [1, 3, H, W])"


class _ExportModule(nn.Module):
    """An export form of ``model``: ``output_names`` name its outputs; ``min_size`` is the smallest side of its
    dynamic range (the backbone's ``export_min_size``)."""

    output_names: tuple[str, ...]

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.min_size = model.backbone.export_min_size


@register_as(EXPORT_REGISTRY, "SemanticSegmentor")
class SemanticSegmentorExport(_ExportModule):
    """images [1, 3, H, W] (normalised) -> logits [1, K, H, W] (TEST.MODE whole or slide)."""

    output_names = ("logits",)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.single_scale(images[0])[None]


@register_as(EXPORT_REGISTRY, "MaskFormer")
class MaskFormerExport(_ExportModule):
    """images [1, 3, H, W] (normalised) -> (sem_seg [1, K, H, W], class_logits [1, Q, K + 1], mask_logits
    [1, Q, Hp / 4, Wp / 4]). In whole mode without MODEL.MASK_FORMER.TEST.PAD_TO_SIZE the semantic scores come from
    the same pass as the logits; otherwise from the configured mode (slide, padding) beside it."""

    output_names = ("sem_seg", "class_logits", "mask_logits")

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.one_pass = model.test_mode == "whole" and not model.pad_to_size

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = images[0]
        out, padded = self.model.head_outputs(image)
        if self.one_pass:
            sem_seg = self.model.semantic_scores(out, padded, tuple(image.shape[-2:]))
        else:
            sem_seg = self.model.single_scale(image)
        return sem_seg[None], out["pred_logits"], out["pred_masks"]


class _DetectorExport(_ExportModule):
    """images [1, 3, H, W] (normalised) -> the detections of the whole image (``output_names``)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.min_size = max(self.min_size, max(s.stride for s in model.neck.output_shape().values()) + 32)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        r = self.model.inference(ImageList.from_tensors([images[0]], self.model.size_divisibility))[0]
        masks = (r.pred_mask_probs,) if r.has("pred_mask_probs") else ()
        return (r.pred_boxes, r.scores, r.pred_classes, *masks)


@register_as(EXPORT_REGISTRY, "GeneralizedRCNN")
class GeneralizedRCNNExport(_DetectorExport):
    def __init__(self, model: nn.Module):
        super().__init__(model)
        mask = ("mask_probs",) if model.roi_head.mask_head is not None else ()
        self.output_names = ("boxes", "scores", "classes", *mask)


@register_as(EXPORT_REGISTRY, "RetinaNet")
class RetinaNetExport(_DetectorExport):
    output_names = ("boxes", "scores", "classes")


def export_module(model: nn.Module) -> nn.Module:
    """The export module of ``model`` (in eval mode); an error names the meta-architectures that have one."""
    name = type(model).__name__
    if name not in EXPORT_REGISTRY:
        have = ", ".join(sorted(k for k, _ in EXPORT_REGISTRY))
        raise NotImplementedError(f"no export form for {name} yet (have: {have})")
    return EXPORT_REGISTRY.get(name)(model.eval()).eval()


def _dynamic_shapes(module: nn.Module, images: torch.Tensor, dynamic: bool, min_size: int, max_size: int,
                    multiple: int):
    """torch.export's dynamic_shapes for ``images`` (None when static): H and W multiples of ``multiple`` from
    ``min_size`` (raised to the module's own ``min_size``) to ``max_size``; the traced size must lie in the range."""
    if not dynamic:
        return None
    low, high = max(1, -(-max(min_size, module.min_size) // multiple)), max_size // multiple
    traced = tuple(images.shape[-2:])
    if any(s % multiple or not low <= s // multiple <= high for s in traced):
        raise ValueError(f"traced size {traced[0]}x{traced[1]}: a dynamic export needs sides that are multiples of "
                         f"{multiple} in [{low * multiple}, {max_size}] (the smallest side this model's program holds "
                         f"for is {module.min_size}: see dense.export); trace a size in that range, raise max_size, "
                         f"or export at a static size")
    h, w = Dim("height", min=low, max=high), Dim("width", min=low, max=high)
    return ({2: multiple * h, 3: multiple * w},)


def export_program(model: nn.Module, images: torch.Tensor, dynamic: bool = True, min_size: int = 64,
                   max_size: int = 2048, size_multiple: int = 32) -> torch.export.ExportedProgram:
    """``torch.export`` of the model's export module traced on ``images`` [1, 3, H, W]; with ``dynamic``, height and
    width are multiples of ``size_multiple`` in [min_size, max_size] (H and W of ``images`` must be too)."""
    module = export_module(model)
    shapes = _dynamic_shapes(module, images, dynamic, min_size, max_size, size_multiple)
    with torch.no_grad():
        return torch.export.export(module, (images,), dynamic_shapes=shapes)


def export_onnx(model: nn.Module, images: torch.Tensor, path: str, dynamic: bool = True, min_size: int = 64,
                max_size: int = 2048, size_multiple: int = 32) -> None:
    """An ONNX file of the model's export module (opset 18), the dense ops lowered through their reference
    implementations to standard operators."""
    module = export_module(model)
    shapes = _dynamic_shapes(module, images, dynamic, min_size, max_size, size_multiple)
    with torch.no_grad(), use_backend("reference"):
        program = torch.onnx.export(module, (images,), dynamo=True, dynamic_shapes=shapes, input_names=["images"],
                                    output_names=list(module.output_names), optimize=True)
    program.save(path)
