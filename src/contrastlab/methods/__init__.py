"""Self-supervised methods: one file per method, each a subclass of :class:`Method`."""

from __future__ import annotations

from typing import Any

from contrastlab.errors import unknown_name
from contrastlab.methods.base import Method, StepOutput
from contrastlab.methods.simclr import SimCLR
from contrastlab.models import build_backbone

METHODS: dict[str, type[Method]] = {"simclr": SimCLR}


def list_methods() -> list[str]:
    """Names accepted by ``--method``."""
    return sorted(METHODS)


def build_method(name: str, backbone_name: str, in_channels: int, **kwargs: Any) -> Method:
    """Build a method around a freshly initialised backbone.

    ``kwargs`` are the method's hyper-parameters (e.g. ``temperature``, ``projection_dim``).
    """
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    backbone = build_backbone(backbone_name, in_channels)
    return METHODS[name](backbone, **kwargs)


def method_kwargs(config: Any) -> dict[str, Any]:
    """The hyper-parameters of ``config.method`` taken from a :class:`TrainConfig`."""
    if config.method == "simclr":
        return {
            "temperature": config.temperature,
            "projection_dim": config.projection_dim,
            "projection_hidden_dim": config.projection_hidden_dim,
        }
    return {}


__all__ = ["METHODS", "Method", "SimCLR", "StepOutput", "build_method", "list_methods",
           "method_kwargs"]
