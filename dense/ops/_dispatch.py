"""Choosing an op backend: "cuda" (compiled CUDA kernel), "cpu" (compiled C++ kernel) or "reference"
(pure PyTorch). ``backend=None`` picks the fastest one available for the input's device, unless a
default was set with :func:`use_backend`."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from . import _C

__all__ = ["BACKENDS", "resolve_backend", "use_backend", "available_backends", "op_registered"]

BACKENDS = ("cuda", "cpu", "reference")
_state = threading.local()


def op_registered(name: str) -> bool:
    """Whether dense._C registered ``torch.ops.dense.<name>``."""
    if _C is None:
        return False
    try:
        getattr(torch.ops.dense, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def available_backends(device: torch.device | str, op: str) -> list[str]:
    """Backends that can run ``op`` (a registered kernel name prefix, e.g. "dcnv3") on ``device``."""
    device = torch.device(device)
    out = []
    if device.type == "cuda" and _C is not None and _C.built_with_cuda() and op_registered(f"{op}_forward"):
        out.append("cuda")
    if device.type == "cpu" and op_registered(f"{op}_forward"):
        out.append("cpu")
    out.append("reference")
    return out


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Make ``name`` the default backend of every dense op in this thread for the block
    (``None`` restores automatic choice). Used to run whole models through one backend."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
    previous = getattr(_state, "backend", None)
    _state.backend = name
    try:
        yield
    finally:
        _state.backend = previous


def resolve_backend(backend: str | None, tensor: torch.Tensor, op: str) -> str:
    """The backend to run ``op`` with for inputs on ``tensor.device``; errors name what is missing."""
    backend = backend if backend is not None else getattr(_state, "backend", None)
    available = available_backends(tensor.device, op)
    if backend is None:
        return available[0]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in available:
        if backend == "cuda" and tensor.device.type != "cuda":
            raise ValueError(f"backend='cuda' needs CUDA tensors; the inputs of {op} are on {tensor.device}")
        if backend == "cpu" and tensor.device.type != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors; the inputs of {op} are on {tensor.device}")
        if _C is None:
            from . import _IMPORT_ERROR

            raise RuntimeError(f"The compiled extension dense._C is not importable ({_IMPORT_ERROR}); "
                               f"build it with `pip install --no-build-isolation -e .` or use backend='reference'")
        raise RuntimeError(f"dense._C has no {backend.upper()} kernel for {op}: rebuild with "
                           f"`FORCE_CUDA=1 pip install --no-build-isolation -e .` or use backend='reference'")
    return backend
