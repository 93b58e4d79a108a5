"""dense.compat.provide_msda(): the official repositories' ``import MultiScaleDeformableAttention as MSDA`` runs on
dense's kernels. The autograd Function below follows the official Mask2Former ms_deform_attn_func.py protocol
(facebookresearch/Mask2Former: MSDA.ms_deform_attn_forward(value, shapes, start, loc, attn, im2col_step) in forward,
MSDA.ms_deform_attn_backward(..., grad_output, im2col_step) -> three gradients in backward); it is written here from
that description, not copied."""
import importlib
import sys

import pytest
import torch
from torch.autograd import Function

import dense.compat
import dense.ops as ops


class _OfficialProtocol(Function):
    @staticmethod
    def forward(ctx, value, shapes, start, loc, attn, im2col_step):
        msda = importlib.import_module("MultiScaleDeformableAttention")
        ctx.im2col_step = im2col_step
        ctx.save_for_backward(value, shapes, start, loc, attn)
        return msda.ms_deform_attn_forward(value, shapes, start, loc, attn, im2col_step)

    @staticmethod
    def backward(ctx, grad_output):
        msda = importlib.import_module("MultiScaleDeformableAttention")
        value, shapes, start, loc, attn = ctx.saved_tensors
        gv, gl, ga = msda.ms_deform_attn_backward(value, shapes, start, loc, attn, grad_output, ctx.im2col_step)
        return gv, None, None, gl, ga, None


@pytest.fixture
def msda():
    sys.modules.pop("MultiScaleDeformableAttention", None)
    yield dense.compat.provide_msda()
    sys.modules.pop("MultiScaleDeformableAttention", None)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_official_function_protocol_equals_dense_op(msda, backend):
    import MultiScaleDeformableAttention as imported  # what the official code does at import time

    assert imported is msda and imported.__dense__
    g = torch.Generator().manual_seed(0)
    shapes, start = torch.tensor([[6, 5], [3, 3]]), torch.tensor([0, 30])
    value = torch.randn(2, 39, 2, 8, generator=g, dtype=torch.float64)
    loc = torch.rand(2, 7, 2, 2, 3, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some points outside
    attn = torch.rand(2, 7, 2, 2, 3, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 7, 16, generator=g, dtype=torch.float64)
    results = []
    for run in (lambda v, lc, a: _OfficialProtocol.apply(v, shapes, start, lc, a, 64),
                lambda v, lc, a: ops.ms_deform_attn(v, shapes, start, lc, a, backend="reference")):
        leaves = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
        with ops.use_backend(backend):
            out = run(*leaves)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in leaves])
    for official, ours in zip(*results):
        torch.testing.assert_close(official, ours, rtol=1e-10, atol=1e-10)


def test_a_users_own_compiled_module_is_kept(msda):
    sys.modules["MultiScaleDeformableAttention"] = own = type(sys)("MultiScaleDeformableAttention")
    assert dense.compat.provide_msda() is own
    assert dense.compat.provide_msda(replace=True).__dense__
