from .config import CfgNode, ConfigError, ConfigValueError, get_cfg

__all__ = ["CfgNode", "ConfigError", "ConfigValueError", "get_cfg"]
