"""Python face of dense's compiled operators (``dense._C``).

Every op dispatches CUDA kernel -> C++ CPU kernel -> pure-PyTorch reference, so dense imports and
runs even where the extension could not be built.
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

__all__ = ["extension_available", "cuda_kernels_available"]


def extension_available() -> bool:
    """True when the compiled extension dense._C imported."""
    return _C is not None


def cuda_kernels_available() -> bool:
    """True when dense._C was built with its CUDA kernels."""
    return _C is not None and _C.built_with_cuda()
