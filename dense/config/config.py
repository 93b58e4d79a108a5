"""Config object: fvcore's CfgNode (YAML, ``_BASE_`` inheritance, ``merge_from_list``) with errors
that name the offending key and file."""
from __future__ import annotations

import os

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["CfgNode", "get_cfg", "ConfigError", "ConfigValueError"]


class ConfigError(KeyError):
    """A config file or override names a key dense does not know, or has a value of the wrong type."""

    def __str__(self) -> str:  # KeyError quotes its message; print it plainly
        return str(self.args[0]) if self.args else ""


class ConfigValueError(ConfigError, ValueError):
    """A config value that what it configures rejects (the message names the key, its value and why)."""


class CfgNode(_FvCfgNode):
    """fvcore CfgNode whose merge errors name the key, the file and the fix."""

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        if not os.path.isfile(cfg_filename):
            raise FileNotFoundError(
                f"Config file '{cfg_filename}' does not exist. Configs live under configs/<dataset>/<method>/, "
                f"e.g. configs/synthetic/semantic_fpn/r18_demo.yaml"
            )
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        loaded = type(self)(loaded)
        try:
            self.merge_from_other_cfg(loaded)
        except KeyError as e:
            raise ConfigError(f"{_explain(e)} (in config file '{cfg_filename}')") from None
        except ValueError as e:
            raise ConfigError(f"{e} (in config file '{cfg_filename}')") from None

    @classmethod
    def load_yaml_with_base(cls, filename: str, allow_unsafe: bool = False) -> dict:
        """fvcore's loader (bases merged under the file), after checking that every ``_BASE_`` file exists: a
        missing one is named with the YAML that refers to it."""
        with open(filename) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError:
                data = {}  # fvcore reports it (or loads it with allow_unsafe)
        bases = data.get("_BASE_", []) if isinstance(data, dict) else []
        for base in [bases] if isinstance(bases, str) else bases:
            path = os.path.expanduser(str(base))
            if "://" in path:
                continue
            path = path if os.path.isabs(path) else os.path.join(os.path.dirname(filename), path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Config file '{filename}' inherits _BASE_ '{base}', which does not exist "
                                        f"(looked for '{os.path.normpath(path)}'; relative bases are read from the "
                                        f"including file's folder): fix that entry of its _BASE_ list")
        return super().load_yaml_with_base(filename, allow_unsafe=allow_unsafe)

    def merge_from_list(self, cfg_list: list) -> None:
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs; got an odd number of items: {cfg_list}"
            )
        try:
            super().merge_from_list(cfg_list)
        except (KeyError, AssertionError) as e:
            raise ConfigError(f"{_explain(e)} (in command-line overrides)") from None
        except ValueError as e:
            raise ConfigError(f"{e} (in command-line overrides)") from None

    def register_removed_key(self, key: str, why: str) -> None:
        """``key`` no longer exists: a config that sets it fails with ``why`` (what to do instead). Call on the root."""
        self.register_renamed_key(key, "", why)

    def raise_key_rename_error(self, full_key: str) -> None:
        new, why = self.__dict__[CfgNode.RENAMED_KEYS][full_key]
        change = f"was renamed to '{new}'" if new else "was removed"
        raise KeyError(f"Config key '{full_key}' {change}: {why}")


def _explain(err: Exception) -> str:
    msg = str(err.args[0]) if err.args else str(err)
    if "Non-existent config key" in msg or "Non-existent key" in msg:
        key = msg.split(":", 1)[1].strip()
        return (
            f"Unknown config key '{key}'. Check its spelling against dense/config/defaults.py, or the "
            f"add_<family>_config function beside the backbone's code for a MODEL.<FAMILY> key (every valid key is "
            f"defined there with a comment)"
        )
    return msg


def get_cfg() -> CfgNode:
    """A fresh default config: every key dense knows, with its default value: the core keys of
    dense/config/defaults.py, and each registered backbone family's node (its ``add_config``, beside its code)."""
    from ..modeling.backbone import BACKBONE_REGISTRY
    from .defaults import _C

    cfg = _C.clone()
    for _, backbone in sorted(BACKBONE_REGISTRY):
        add = getattr(backbone, "add_config", None)
        if add is not None:
            add(cfg)
    return cfg
