"""Optimisers (SGD, AdamW, LARS), their settings and the warm-up + cosine schedule; used by
training and by fine-tuning in evaluation."""

from contrastlab.optim.lars import LARS
from contrastlab.optim.optimizers import (
    BASE_LR,
    DEFAULT_WEIGHT_DECAY,
    build_optimizer,
    default_lr,
)
from contrastlab.optim.schedule import set_lr, warmup_cosine
from contrastlab.optim.settings import OPTIMIZERS, OptimizerSettings

__all__ = ["BASE_LR", "DEFAULT_WEIGHT_DECAY", "LARS", "OPTIMIZERS", "OptimizerSettings",
           "build_optimizer", "default_lr", "set_lr", "warmup_cosine"]
