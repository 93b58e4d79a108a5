from .checkpointer import CheckpointMismatchError, DenseCheckpointer, LoadReport
from .io import UnsafeCheckpointError, load_checkpoint_file
from .released import ReleasedCheckpoint

__all__ = ["DenseCheckpointer", "LoadReport", "CheckpointMismatchError", "UnsafeCheckpointError",
           "load_checkpoint_file", "ReleasedCheckpoint"]
