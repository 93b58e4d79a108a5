"""``MultiScaleDeformableAttention`` for the official repositories, on dense's kernels (CPU and GPU).

Deformable DETR, Mask2Former and ViT-Adapter import a compiled CUDA module, ``import MultiScaleDeformableAttention as
MSDA``, and call ``MSDA.ms_deform_attn_forward`` / ``MSDA.ms_deform_attn_backward`` from their
``MSDeformAttnFunction``; without a CUDA build their code does not import. :func:`provide_msda` installs a module of
that name whose two functions run dense's op (compiled CPU or CUDA kernel, else the reference), so their code runs
unchanged::

    import dense.compat
    dense.compat.provide_msda()          # before the official code is imported
    from mask2former import ...          # or: import models.ops (Deformable DETR), ViT-Adapter's ops, ...

Semantics are the official module's: forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
im2col_step) -> output; backward(..., grad_output, im2col_step) -> [grad_value, grad_sampling_loc, grad_attn_weight].
"""
from __future__ import annotations

import sys
import types

import torch

from ..ops import ms_deform_attn, reference
from ..ops._dispatch import resolve_backend

__all__ = ["provide_msda", "ms_deform_attn_forward", "ms_deform_attn_backward"]

MODULE_NAME = "MultiScaleDeformableAttention"


def ms_deform_attn_forward(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                           sampling_loc: torch.Tensor, attn_weight: torch.Tensor, im2col_step: int) -> torch.Tensor:
    """value [N, S, M, D], sampling_loc [N, Lq, M, L, P, 2], attn_weight [N, Lq, M, L, P] -> [N, Lq, M * D]."""
    with torch.no_grad():  # the caller's autograd.Function owns the graph
        return ms_deform_attn(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step)


def ms_deform_attn_backward(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                            sampling_loc: torch.Tensor, attn_weight: torch.Tensor, grad_output: torch.Tensor,
                            im2col_step: int) -> list[torch.Tensor]:
    """[grad_value, grad_sampling_loc, grad_attn_weight] of ``grad_output`` [N, Lq, M * D]."""
    if resolve_backend(None, value, "ms_deform_attn") != "reference":
        grads = torch.ops.dense.ms_deform_attn_backward(value.contiguous(), spatial_shapes.long().contiguous(),
                                                        level_start_index.long().contiguous(),
                                                        sampling_loc.contiguous(), attn_weight.contiguous(),
                                                        grad_output.contiguous())
        return list(grads)
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_(True) for t in (value, sampling_loc, attn_weight)]
        out = reference.ms_deform_attn(inputs[0], spatial_shapes, level_start_index, inputs[1], inputs[2])
        return list(torch.autograd.grad(out, inputs, grad_output))


def provide_msda(replace: bool = False) -> types.ModuleType:
    """Make ``import MultiScaleDeformableAttention`` give dense's implementation (returned). An importable compiled
    module of that name (a user's own CUDA build) is kept unless ``replace``."""
    if not replace:
        existing = sys.modules.get(MODULE_NAME)
        if existing is None:
            try:
                import importlib

                existing = importlib.import_module(MODULE_NAME)
            except ImportError:
                existing = None
        if existing is not None:
            return existing
    module = types.ModuleType(MODULE_NAME, __doc__)
    module.ms_deform_attn_forward = ms_deform_attn_forward
    module.ms_deform_attn_backward = ms_deform_attn_backward
    module.__dense__ = True
    sys.modules[MODULE_NAME] = module
    return module
