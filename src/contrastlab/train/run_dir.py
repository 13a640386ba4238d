"""The run directory: where a run's config, metrics and checkpoints live.

    RUN/
      config.yaml            the resolved configuration (defaults < YAML < flags)
      metrics.jsonl          one JSON object per line, "type": step | epoch | eval | final
      final_metrics.json     the last evaluation, also printed at the end of training
      checkpoints/last.pt    model, optimiser, position in the schedule, RNG states (atomic)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from contrastlab.errors import CheckpointError, ConfigError

CHECKPOINT_NAME = "last.pt"


class RunDirectory:
    """Paths and writers of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def final_metrics_path(self) -> Path:
        return self.root / "final_metrics.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoints" / CHECKPOINT_NAME

    def prepare(self, resume: bool) -> None:
        """Create the folder and check it is writable, before any data is read."""
        try:
            (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise ConfigError(
                f"output folder '{self.root}' is not writable ({error.strerror}); choose another "
                "with --out"
            ) from error
        if resume and not self.checkpoint_path.is_file():
            raise CheckpointError(
                f"--resume given but '{self.checkpoint_path}' does not exist; drop --resume to "
                "start a new run"
            )
        if not resume and self.checkpoint_path.is_file():
            raise CheckpointError(
                f"'{self.root}' already holds a run; pass --resume to continue it, or choose "
                "another --out (or delete the folder) to start afresh"
            )

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(_finite(record)) + "\n")

    def write_final(self, metrics: dict[str, Any]) -> None:
        self.final_metrics_path.write_text(json.dumps(_finite(metrics), indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
