"""Where a run computes and in which precision and memory layout."""

from __future__ import annotations

import torch

from contrastlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None: float32, or float64 with 'fp64'); 'auto' is bf16 on CUDA (if
    supported), fp32 on CPU."""
    if name in ("fp32", "fp64") or (name == "auto" and device.type != "cuda"):
        return None
    if name == "fp16":
        return torch.float16
    if name == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def memory_format_of(channels_last: bool) -> torch.memory_format:
    """NHWC (channels_last) when asked, else the default NCHW layout."""
    return torch.channels_last if channels_last else torch.contiguous_format


__all__ = ["memory_format_of", "resolve_device", "resolve_precision"]
