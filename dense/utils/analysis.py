"""FLOP counting with fvcore, taught dense's custom ops.

Convention of the papers and fvcore: one fused multiply-add = one flop. fvcore has no formula for
dense's compiled ops, so each gets one here, counting its multiply-adds the way an einsum equivalent
would (neighbourhood attention as the two K*K matrix products; deformable sampling as the weighted sum
of the sampled values). Interpolation arithmetic, softmax, GELU, grid_sample and normalisation statistics
are not counted (fvcore does not count them for any model), which is what the papers' tables assume.
"""
from __future__ import annotations

from collections import Counter
from math import prod
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis

__all__ = ["flop_count", "DENSE_OP_HANDLES"]


def _shape(value) -> list[int]:
    return value.type().sizes()


def _na_qk(inputs: list[Any], outputs: list[Any]) -> int:
    return prod(_shape(outputs[0])) * _shape(inputs[0])[-1]  # B*heads*H*W*K*K x D


def _na_av(inputs: list[Any], outputs: list[Any]) -> int:
    return prod(_shape(inputs[0])) * _shape(outputs[0])[-1]  # B*heads*H*W*K*K x D


def _ms_deform_attn(inputs: list[Any], outputs: list[Any]) -> int:
    n, lq, m, levels, points, _ = _shape(inputs[3])
    return n * lq * m * levels * points * _shape(inputs[0])[-1]  # one multiply-add per sampled value channel


def _dcnv3(inputs: list[Any], outputs: list[Any]) -> int:
    return prod(_shape(inputs[2])) * inputs[12].toIValue()  # mask [N,Ho,Wo,G*P] x group_channels


def _dscn(inputs: list[Any], outputs: list[Any]) -> int:
    return prod(_shape(inputs[1])) * inputs[11].toIValue()  # offset [N,Ho,Wo,G*P] x group_channels


def _sdpa(inputs: list[Any], outputs: list[Any]) -> int:
    q, k, v = (_shape(t) for t in inputs[:3])  # [..., L, E], [..., S, E], [..., S, Ev]
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])  # q.k^T and attn.v


DENSE_OP_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa,
    "dense::na2d_qk_forward": _na_qk,
    "dense::na2d_av_forward": _na_av,
    "dense::ms_deform_attn_forward": _ms_deform_attn,
    "dense::dcnv3_forward": _dcnv3,
    "dense::dscn_forward": _dscn,
}


def _tensors(x: Any):
    """Every tensor inside nested dicts / lists / tuples / Instances, in order."""
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif hasattr(x, "get_fields"):  # Instances
        yield from _tensors(x.get_fields())


class _TensorOutputs(torch.nn.Module):
    """The model with its outputs flattened to a tuple of tensors: tracing accepts no Instances."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(_tensors(self.model(*inputs)))


def flop_count(model: torch.nn.Module, inputs: tuple) -> tuple[float, Counter]:
    """(total multiply-adds, {operator: count} of operators fvcore could not count). Detection models are counted
    end to end at inference: proposals, RoI heads on the detections and the mask paste-back included."""
    analysis = FlopCountAnalysis(_TensorOutputs(model), inputs).set_op_handle(**DENSE_OP_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return float(analysis.total()), Counter(analysis.unsupported_ops())
