"""What a run directory recorded, read without the model: config, metrics.jsonl, final metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contrastlab.config import flatten
from contrastlab.errors import CheckpointError
from contrastlab.runs.directory import RunDirectory


@dataclass
class RunRecords:
    """The records of one run, grouped by their ``"type"``."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    bad_lines: int = 0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") == kind]

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)

    @property
    def final_metrics(self) -> dict[str, Any]:
        """``final_metrics.json``, else the last ``final`` record, else ``{}``."""
        if self.final is not None:
            return self.final
        finals = self.of_type("final")
        return finals[-1] if finals else {}


def read_run(path: str | Path) -> RunRecords:
    """Read ``RUN/config.yaml``, ``RUN/metrics.jsonl`` and ``RUN/final_metrics.json``.

    Missing files give empty parts (a run that is still going, or was stopped); a line of
    metrics.jsonl that is not JSON (a run killed mid-write) is skipped and counted.

    Raises:
        CheckpointError: when ``path`` is not a run directory at all.
    """
    run = RunDirectory(path)
    if not run.root.is_dir():
        raise CheckpointError(f"run directory '{run.root}' does not exist")
    if not run.metrics_path.is_file() and not run.config_path.is_file():
        raise CheckpointError(
            f"'{run.root}' is not a run directory (no metrics.jsonl or config.yaml); give the "
            "--out folder of `contrastlab train`"
        )
    result = RunRecords(run.root)
    if run.config_path.is_file():
        loaded = yaml.safe_load(run.config_path.read_text())
        result.config = flatten(loaded) if isinstance(loaded, dict) else {}
    if run.metrics_path.is_file():
        for line in run.metrics_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                result.bad_lines += 1
                continue
            if isinstance(record, dict):
                result.records.append(record)
    if run.final_metrics_path.is_file():
        try:
            result.final = json.loads(run.final_metrics_path.read_text())
        except json.JSONDecodeError:
            result.final = None
    return result
