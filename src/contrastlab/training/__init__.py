"""The training loop (:class:`Trainer`), its state, callbacks, progress bar, loggers and the
multi-process (torchrun) machinery. ``contrastlab.train(...)`` is the one-call entry point that
builds a Trainer with the usual callbacks."""

from contrastlab.training.callbacks import Callback
from contrastlab.training.loggers import make_loggers
from contrastlab.training.progress import ProgressCallback
from contrastlab.training.state import TrainResult, TrainState
from contrastlab.training.trainer import Trainer, epoch_permutation, gradient_norm

__all__ = ["Callback", "ProgressCallback", "TrainResult", "TrainState", "Trainer",
           "epoch_permutation", "gradient_norm", "make_loggers"]
