"""Registering an object in an fvcore Registry under a chosen name (fvcore uses ``obj.__name__``)."""
from typing import Any, Callable

from fvcore.common.registry import Registry

__all__ = ["register_as"]


def register_as(registry: Registry, name: str) -> Callable[[Any], Any]:
    """Decorator: ``@register_as(EVALUATOR_REGISTRY, "coco")``."""

    def deco(obj: Any) -> Any:
        registry._do_register(name, obj)
        return obj

    return deco
