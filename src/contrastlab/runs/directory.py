"""The run directory: where a run's config, metrics and checkpoints live.

    RUN/
      config.yaml            the resolved configuration (defaults < YAML < flags)
      metrics.jsonl          one JSON object per line, "type": data | step | skipped_step |
                             epoch | eval | diagnostics | alarm | stopped | final
      final_metrics.json     the last evaluation, also printed at the end of training
      checkpoints/last.pt    model, optimiser, position in the schedule, RNG states (atomic)
      checkpoints/best.pt    the checkpoint with the best kNN accuracy (with --eval-every)
      checkpoints/epoch-N.pt every --keep N epochs
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.runs.checkpoint import remove_stale_temporaries

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

    @property
    def best_checkpoint_path(self) -> Path:
        return self.root / "checkpoints" / "best.pt"

    def epoch_checkpoint_path(self, epoch: int) -> Path:
        return self.root / "checkpoints" / f"epoch-{epoch}.pt"

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
        if resume:  # leftovers of a process killed mid-write
            remove_stale_temporaries(self.checkpoint_path.parent)
            self._end_last_line()

    def _end_last_line(self) -> None:
        """Give metrics.jsonl a final newline if a kill cut its last record short, so that the
        records appended on resume start on a line of their own (readers skip the cut line)."""
        if not self.metrics_path.is_file() or self.metrics_path.stat().st_size == 0:
            return
        with self.metrics_path.open("rb+") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")

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


def default_run_name(method: str, data: str) -> str:
    """``runs/<method>-<data>-<date>-<time>`` for a run given no ``--out``."""
    data_name = Path(data).name.split(".")[0] or "data"
    return f"runs/{method}-{data_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
