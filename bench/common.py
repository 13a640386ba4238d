"""Shared helpers of the benchmark scripts: where the shared data is, and how results are printed.

Every benchmark prints exactly one JSON object on stdout; with ``--markdown`` it also prints a table
row for docs/benchmarks.md on stderr.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(name: str) -> Path:
    """A file or folder under ../shared/data; exits with a clear message if it is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        sys.exit(f"benchmark data not found: {path} (the shared data folder beside the repository)")
    return path


def machine() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def emit(result: dict[str, Any], markdown_row: str | None = None) -> None:
    print(json.dumps(result))
    if markdown_row is not None:
        print(markdown_row, file=sys.stderr)
