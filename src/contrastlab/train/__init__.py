"""The training loop, optimisers, schedules, checkpoints and run directories."""

from contrastlab.train.checkpoint import load_checkpoint, save_atomic
from contrastlab.train.run_dir import RunDirectory
from contrastlab.train.trainer import TrainResult, train

__all__ = ["RunDirectory", "TrainResult", "load_checkpoint", "save_atomic", "train"]
