"""Building objects from the config: registries with errors that list the valid names, and constructors whose
argument errors are worded in config keys."""
from __future__ import annotations

import re
from typing import Any, Callable

from fvcore.common.registry import Registry

from ..config.config import ConfigError, ConfigValueError

__all__ = ["build_from_registry", "ArgumentError", "build_from_node"]


def build_from_registry(registry: Registry, name: str, cfg_key: str, *args: Any) -> Any:
    """``registry.get(name).from_config(*args)`` (or the registered function called with ``*args``)."""
    if name not in registry:
        known = ", ".join(sorted(k for k, _ in registry))
        raise ConfigError(f"{cfg_key} = '{name}' is not registered in {registry._name}; known names: {known}")
    obj = registry.get(name)
    return obj.from_config(*args) if hasattr(obj, "from_config") else obj(*args)


class ArgumentError(ValueError):
    """A constructor argument is invalid. Model code raises it about its own arguments, without knowing the config:
    ``arg`` names the argument, ``reason`` says why, naming other arguments in backticks (`embed_dims`);
    :func:`build_from_node` rewords it in config keys."""

    def __init__(self, arg: str, reason: str):
        super().__init__(f"{arg}: {reason}")
        self.arg, self.reason = arg, reason


def _lookup(cfg, key: str) -> Any:
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def build_from_node(build: Callable, cfg, node: str, **other_keys: str) -> Any:
    """``build(**arguments)`` from the config: the node (e.g. "MODEL.DAT") holds exactly ``build``'s keyword
    arguments, upper-cased, so that a config names every knob once; ``other_keys`` names the keys of the remaining
    arguments (e.g. ``out_features="MODEL.BACKBONE.OUT_FEATURES"``). An :class:`ArgumentError` about an argument
    becomes a :class:`~dense.config.config.ConfigValueError` naming its key and value (and the keys of the other
    arguments its reason names)."""
    keys = {key.lower(): f"{node}.{key}" for key in _lookup(cfg, node)}
    keys.update(other_keys)
    kwargs = {arg: _lookup(cfg, key) for arg, key in keys.items()}
    try:
        return build(**kwargs)
    except ArgumentError as e:
        if e.arg not in keys:
            raise
        reason = re.sub(r"`(\w+)`", lambda m: keys.get(m[1], m[1]), e.reason)
        raise ConfigValueError(f"{keys[e.arg]} = {kwargs[e.arg]!r}: {reason}") from None
