"""META_ARCH_REGISTRY and build_model."""
from __future__ import annotations

import torch
from fvcore.common.registry import Registry
from torch import nn

from ..registry_utils import build_from_registry

__all__ = ["META_ARCH_REGISTRY", "build_model", "resolve_device"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry of meta-architectures (whole models): ``from_config(cfg)`` returns an nn.Module whose
``forward(batched_inputs: list[dict])`` follows Detectron2's contract.
"""


def resolve_device(cfg) -> torch.device:
    """MODEL.DEVICE, or cuda when available and the key is empty; cuda:LOCAL_RANK under DDP."""
    from ...utils import comm

    name = cfg.MODEL.DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE is '{name}' but no CUDA device is available: set MODEL.DEVICE cpu")
    if name == "cuda":
        name = f"cuda:{comm.get_local_rank()}"
    return torch.device(name)


def build_model(cfg) -> nn.Module:
    """Build the model named by MODEL.META_ARCHITECTURE on MODEL.DEVICE (weights are not loaded:
    use DenseCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS))."""
    model = build_from_registry(META_ARCH_REGISTRY, cfg.MODEL.META_ARCHITECTURE, "MODEL.META_ARCHITECTURE", cfg)
    return model.to(resolve_device(cfg))
