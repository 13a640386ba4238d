"""The base of every method's settings, and the declarations several methods share.

Each method file declares its hyper-parameters as a :class:`MethodSettings` dataclass beside the
method (``SimCLRSettings`` in simclr.py). Settings that many methods have (a temperature, the
width of a projection head, an EMA momentum) are declared through the helpers below, so their
help and limits are written once while each method states its own default and the source of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from contrastlab.settings import Settings, setting


@dataclass
class MethodSettings(Settings):
    """Hyper-parameters of one method (the ``method:`` section of a configuration)."""

    section: ClassVar[str] = "method"
    #: the method's registered name, set when the method is registered
    name: ClassVar[str] = ""


def temperature(default: float, source: str) -> Any:
    """The softmax temperature tau of a contrastive or distillation loss."""
    return setting(default, "Softmax temperature tau of the loss.", source=source, gt=0)


def projection_dim(default: int, source: str) -> Any:
    return setting(default, "Output width of the projection head (the space the loss acts on).",
                   source=source, ge=1)


def projection_hidden_dim(default: int, source: str) -> Any:
    return setting(default, "Hidden width of the projection head.", source=source, ge=1)


def prediction_hidden_dim(default: int, source: str) -> Any:
    return setting(default, "Hidden width of the prediction head.", source=source, ge=1)


def ema_momentum(default: float, source: str) -> Any:
    return setting(default, "Momentum of the EMA teacher / key encoder.", source=source, ge=0,
                   lt=1)


def ema_cosine(default: bool, source: str) -> Any:
    return setting(default, "Raise the EMA momentum to 1 on a cosine over training.",
                   source=source)


def queue_size(default: int, help: str, source: str) -> Any:
    return setting(default, help, source=source, ge=0)


def loss_chunk_size() -> Any:
    return setting(None, "Rows per tile of the memory-efficient exact contrastive loss; "
                   "none: tiled only when the N x N logits would exceed 256 MiB.",
                   source="here", ge=1)


__all__ = ["MethodSettings", "ema_cosine", "ema_momentum", "loss_chunk_size",
           "prediction_hidden_dim", "projection_dim", "projection_hidden_dim", "queue_size",
           "temperature"]
