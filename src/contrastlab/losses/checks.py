"""Argument checks shared by the losses, so that every loss words a mistake the same way.

A value a user chose (a temperature, a margin) that is out of range is a
:class:`~contrastlab.errors.ConfigError` naming the setting and the value ("temperature must be
> 0, got -0.1"); tensors of the wrong shape are a programming error of the caller and raise
``ValueError``.
"""

from __future__ import annotations

from torch import Tensor

from contrastlab.errors import ConfigError


def check_positive(value: float, name: str) -> None:
    """Raise ``ConfigError("{name} must be > 0, got {value}")`` unless ``value > 0`` (NaN too)."""
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def check_temperature(value: float, name: str = "temperature") -> None:
    """The positivity check of a temperature (tau, DINO's teacher tau, Sinkhorn's epsilon,
    DCLW's sigma: every divisor of logits), with the setting's name in the message."""
    check_positive(value, name)


def check_matrix(name: str, tensor: Tensor) -> None:
    """``tensor`` must be a (rows, D) matrix."""
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a (rows, D) matrix, got shape {tuple(tensor.shape)}")


def check_same_width(**tensors: Tensor) -> None:
    """Every tensor is a matrix and all have the same number of columns D."""
    for name, tensor in tensors.items():
        check_matrix(name, tensor)
    widths = {name: tensor.shape[1] for name, tensor in tensors.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"embedding dimensions differ: {widths}")


def check_pair(first: Tensor, second: Tensor, what: str = "z1 and z2") -> None:
    """Two (N, D) batches of the same shape, row i of each a pair (two views, image and text)."""
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"{what} must both be (N, D) with the same shape, got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )


def check_row_offset(row_offset: int, rows: int, columns: int) -> None:
    """The ``rows`` local rows fit inside ``columns`` columns starting at ``row_offset``."""
    if not 0 <= row_offset <= columns - rows:
        raise ValueError(
            f"row_offset {row_offset} does not place {rows} local rows inside {columns} columns "
            f"(need 0 <= row_offset <= {columns - rows})"
        )


__all__ = ["check_matrix", "check_pair", "check_positive", "check_row_offset", "check_same_width",
           "check_temperature"]
