"""Reports of runs: ``write_report`` (one self-contained HTML page per run, PNGs beside it) and
``write_comparison`` (several runs side by side).

The names are imported on first use, so that ``contrastlab.report.cli`` (loaded by every
command line call) does not pull in torch and matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "RunRecords": "contrastlab.report.records",
    "read_run": "contrastlab.report.records",
    "comparison_rows": "contrastlab.report.compare",
    "read_runs": "contrastlab.report.compare",
    "write_comparison": "contrastlab.report.compare",
    "write_report": "contrastlab.report.report",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'contrastlab.report' has no attribute '{name}'")
    return getattr(import_module(_WHERE[name]), name)


__all__ = sorted(_WHERE)
