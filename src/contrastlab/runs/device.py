"""Where a run computes and in which precision and memory layout."""

from __future__ import annotations

from pathlib import Path

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


def cpu_lacks_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when this CPU is known to have no bf16 instructions (neither AVX512-BF16 nor AMX):
    torch then emulates bf16 autocast, which is slower than float32 (about 4x for the ConvNet
    on an AVX2 EPYC, docs/benchmarks.md). False where it has them or where it cannot tell
    (no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool(flags) and not any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def precision_warning(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """A line for the user when the chosen precision is known to be slow on this device."""
    if dtype == torch.bfloat16 and device.type == "cpu" and cpu_lacks_native_bf16():
        return ("[yellow]bf16 on this CPU: it has no bf16 instructions (avx512_bf16 / amx_bf16), "
                "so autocast emulates them and trains slower than fp32 (about 4x measured on an "
                "AVX2 CPU); --precision fp32 is likely faster here[/yellow]")
    return None


def memory_format_of(channels_last: bool) -> torch.memory_format:
    """NHWC (channels_last) when asked, else the default NCHW layout."""
    return torch.channels_last if channels_last else torch.contiguous_format


__all__ = ["cpu_lacks_native_bf16", "memory_format_of", "precision_warning", "resolve_device",
           "resolve_precision"]
