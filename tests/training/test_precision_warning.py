"""bf16 on a CPU without bf16 instructions is emulated and slower than fp32: the run says so."""

from pathlib import Path

import torch

from contrastlab.runs.device import cpu_lacks_native_bf16, precision_warning

CPU = torch.device("cpu")


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: some CPU\nflags\t\t: {flags}\n")
    return path


def test_the_cpu_flags_decide(tmp_path: Path) -> None:
    assert cpu_lacks_native_bf16(cpuinfo(tmp_path, "fpu sse2 avx2 fma"))
    assert not cpu_lacks_native_bf16(cpuinfo(tmp_path, "avx2 avx512f avx512_bf16"))
    assert not cpu_lacks_native_bf16(cpuinfo(tmp_path, "avx2 amx_bf16 amx_tile"))
    assert not cpu_lacks_native_bf16(tmp_path / "missing")  # cannot tell: no warning


def test_the_warning_is_for_bf16_on_the_cpu_only() -> None:
    assert precision_warning(None, CPU) is None
    assert precision_warning(torch.float16, CPU) is None
    assert precision_warning(torch.bfloat16, torch.device("cuda")) is None
    warning = precision_warning(torch.bfloat16, CPU)
    assert (warning is None) == (not cpu_lacks_native_bf16())
    if warning is not None:
        assert "--precision fp32" in warning
