from .config import CfgNode, get_cfg
from .defaults import _C as DEFAULT_CONFIG

__all__ = ["CfgNode", "get_cfg", "DEFAULT_CONFIG"]
