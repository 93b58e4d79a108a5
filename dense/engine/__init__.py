from .defaults import Predictor, default_argument_parser, default_setup, setup_cfg
from .hooks import HookBase
from .launch import launch
from .trainer import NonFiniteLossError, Trainer, create_ddp_model

__all__ = ["default_argument_parser", "default_setup", "setup_cfg", "Predictor", "HookBase", "launch", "Trainer",
           "create_ddp_model", "NonFiniteLossError"]
