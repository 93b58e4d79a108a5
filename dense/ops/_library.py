"""The compiled kernels of dense._C as complete PyTorch operators.

dense._C defines the schemas (``torch.ops.dense.*``, TORCH_LIBRARY) and the CPU / CUDA kernels. This module adds
what PyTorch needs to treat them as its own operators:

- a fake kernel per op (output shapes and dtypes from the input shapes alone), so that FakeTensor tracing works:
  ``torch.compile`` (no graph break at a dense op), ``torch.export`` and ``torch.func``;
- autograd through the backward kernels (``register_autograd``), so the forward ops are differentiable without a
  Python ``autograd.Function`` (which dynamo would have to trace);
- autocast rules: under ``torch.autocast`` (CUDA fp16 / bf16, CPU bf16) every floating input is cast to float32
  and the op runs, and returns, in float32 — sampling locations and attention logits keep sub-pixel accuracy, and
  parameters (NA's relative-position bias) never meet an activation of another dtype.
"""
from __future__ import annotations

import torch

from ._dispatch import op_registered

__all__ = ["register_ops"]


def _na2d_qk_fake(query, key, rpb, kernel_size, dilation):
    return query.new_empty((*query.shape[:-1], kernel_size * kernel_size))


def _na2d_qk_backward_fake(grad_attn, query, key, has_rpb, kernel_size, dilation):
    rpb = query.new_empty((query.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1) if has_rpb else (0,))
    return torch.empty_like(query), torch.empty_like(key), rpb


def _na2d_qk_setup(ctx, inputs, output):
    query, key, rpb, ctx.kernel_size, ctx.dilation = inputs
    ctx.has_rpb = rpb is not None
    ctx.save_for_backward(query, key)


def _na2d_qk_backward(ctx, grad_attn):
    query, key = ctx.saved_tensors
    gq, gk, grpb = torch.ops.dense.na2d_qk_backward(grad_attn.contiguous(), query, key, ctx.has_rpb, ctx.kernel_size,
                                                    ctx.dilation)
    return gq, gk, (grpb if ctx.has_rpb else None), None, None


def _na2d_av_fake(attn, value, kernel_size, dilation):
    return torch.empty_like(value)


def _na2d_av_backward_fake(grad_out, attn, value, kernel_size, dilation):
    return torch.empty_like(attn), torch.empty_like(value)


def _na2d_av_setup(ctx, inputs, output):
    attn, value, ctx.kernel_size, ctx.dilation = inputs
    ctx.save_for_backward(attn, value)


def _na2d_av_backward(ctx, grad_out):
    attn, value = ctx.saved_tensors
    ga, gv = torch.ops.dense.na2d_av_backward(grad_out.contiguous(), attn, value, ctx.kernel_size, ctx.dilation)
    return ga, gv, None, None


def _msda_fake(value, spatial_shapes, level_start_index, sampling_loc, attn_weight):
    n, _, heads, channels = value.shape
    return value.new_empty((n, sampling_loc.shape[1], heads * channels))


def _msda_backward_fake(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output):
    return torch.empty_like(value), torch.empty_like(sampling_loc), torch.empty_like(attn_weight)


def _msda_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _msda_backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_loc, attn_weight = ctx.saved_tensors
    gv, gl, ga = torch.ops.dense.ms_deform_attn_backward(value, spatial_shapes, level_start_index, sampling_loc,
                                                         attn_weight, grad_output.contiguous())
    return gv, None, None, gl, ga


def _dcn_fake(input, offset, *args):
    """dcnv3 / dscn: [N, Ho, Wo, G*D] (the offsets' grid, the input's channels)."""
    return input.new_empty((*offset.shape[:3], input.shape[-1]))


def _dcnv3_backward_fake(input, offset, mask, grad_output, *args):
    return torch.empty_like(input), torch.empty_like(offset), torch.empty_like(mask)


def _dcnv3_setup(ctx, inputs, output):
    ctx.args = inputs[3:]
    ctx.save_for_backward(*inputs[:3])


def _dcnv3_backward(ctx, grad_output):
    input, offset, mask = ctx.saved_tensors
    grads = torch.ops.dense.dcnv3_backward(input, offset, mask, grad_output.contiguous(), *ctx.args)
    return (*grads, *([None] * len(ctx.args)))


def _dscn_backward_fake(input, offset, grad_output, *args):
    return torch.empty_like(input), torch.empty_like(offset)


def _dscn_setup(ctx, inputs, output):
    ctx.args = inputs[2:]
    ctx.save_for_backward(*inputs[:2])


def _dscn_backward(ctx, grad_output):
    input, offset = ctx.saved_tensors
    grads = torch.ops.dense.dscn_backward(input, offset, grad_output.contiguous(), *ctx.args)
    return (*grads, *([None] * len(ctx.args)))


# forward op -> (its fake, its backward op's fake, autograd setup_context, backward)
_OPS = {
    "na2d_qk": (_na2d_qk_fake, _na2d_qk_backward_fake, _na2d_qk_setup, _na2d_qk_backward),
    "na2d_av": (_na2d_av_fake, _na2d_av_backward_fake, _na2d_av_setup, _na2d_av_backward),
    "ms_deform_attn": (_msda_fake, _msda_backward_fake, _msda_setup, _msda_backward),
    "dcnv3": (_dcn_fake, _dcnv3_backward_fake, _dcnv3_setup, _dcnv3_backward),
    "dscn": (_dcn_fake, _dscn_backward_fake, _dscn_setup, _dscn_backward),
}
_registered = False


def register_ops() -> None:
    """Register fake kernels, autograd and autocast rules for every op dense._C defines (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    for name, (fake, backward_fake, setup, backward) in _OPS.items():
        if not op_registered(f"{name}_forward"):
            continue
        forward = f"dense::{name}_forward"
        torch.library.register_fake(forward)(fake)
        torch.library.register_fake(f"dense::{name}_backward")(backward_fake)
        torch.library.register_autograd(forward, backward, setup_context=setup)
        for device in ("cpu", "cuda"):
            torch.library.register_autocast(forward, device, torch.float32)
