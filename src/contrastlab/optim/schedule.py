"""The learning-rate schedule: linear warm-up, then a half cosine down to zero."""

from __future__ import annotations

import math

from torch.optim import Optimizer


def warmup_cosine(progress: float, warmup_fraction: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the schedule.

    Linear warm-up from 0 over the first ``warmup_fraction``, then a half cosine down to 0
    (Loshchilov & Hutter 2017, without restarts).
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return progress / warmup_fraction
    span = max(1.0 - warmup_fraction, 1e-12)
    return 0.5 * (1.0 + math.cos(math.pi * (progress - warmup_fraction) / span))


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
