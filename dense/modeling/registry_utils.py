"""Building objects from fvcore registries with errors that list the valid names."""
from __future__ import annotations

from typing import Any

from fvcore.common.registry import Registry

from ..config.config import ConfigError


def build_from_registry(registry: Registry, name: str, cfg_key: str, *args: Any) -> Any:
    """``registry.get(name).from_config(*args)`` (or the registered function called with ``*args``)."""
    if name not in registry:
        known = ", ".join(sorted(k for k, _ in registry))
        raise ConfigError(f"{cfg_key} = '{name}' is not registered in {registry._name}; known names: {known}")
    obj = registry.get(name)
    return obj.from_config(*args) if hasattr(obj, "from_config") else obj(*args)
