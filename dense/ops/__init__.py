"""dense's custom operators: MSDeformAttn, DCNv3, DSCN and 2-D neighbourhood attention.

Each op dispatches CUDA kernel -> C++ CPU kernel -> pure-PyTorch reference (``backend=None``), or
runs the backend named by ``backend="cuda" | "cpu" | "reference"``; :func:`use_backend` sets the
default for a block of code (e.g. a whole model). The kernels live in the compiled extension
``dense._C`` (sources in ops/); dense imports and runs without it, on the references.
"""
from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from .. import _C
except ImportError as _err:  # not built (e.g. a source checkout without `pip install -e .`)
    _C = None
    _IMPORT_ERROR: ImportError | None = _err
else:
    _IMPORT_ERROR = None

from . import reference  # noqa: E402
from ._dispatch import available_backends, use_backend  # noqa: E402
from ._library import register_ops  # noqa: E402
from .dcnv3 import DCNv3, dcnv3  # noqa: E402
from .dscn import DSCNX, DSCNY, dscn  # noqa: E402
from .ms_deform_attn import MSDeformAttn, ms_deform_attn  # noqa: E402
from .neighborhood_attention import NeighborhoodAttention2D, na2d_av, na2d_qk, neighborhood_attention_2d  # noqa: E402

__all__ = ["ms_deform_attn", "MSDeformAttn", "dcnv3", "DCNv3", "dscn", "DSCNX", "DSCNY", "na2d_qk", "na2d_av",
           "neighborhood_attention_2d", "NeighborhoodAttention2D", "reference", "use_backend", "available_backends",
           "extension_available", "cuda_kernels_available"]


def extension_available() -> bool:
    """True when the compiled extension dense._C imported."""
    return _C is not None


def cuda_kernels_available() -> bool:
    """True when dense._C was built with its CUDA kernels."""
    return _C is not None and _C.built_with_cuda()


register_ops()  # fake kernels, autograd and autocast rules of the compiled ops
