from .checkpointer import CheckpointMismatchError, DenseCheckpointer, LoadReport
from .io import UnsafeCheckpointError, load_checkpoint_file
from .official import CHECKPOINT_CONVERTERS

__all__ = ["DenseCheckpointer", "LoadReport", "CheckpointMismatchError", "UnsafeCheckpointError",
           "load_checkpoint_file", "CHECKPOINT_CONVERTERS"]
