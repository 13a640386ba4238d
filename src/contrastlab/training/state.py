"""The trainer's explicit state (where training is) and what a run returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainState:
    """Where training is. Saved in every checkpoint and restored on resume, so a resumed run
    continues at the same batch of the same epoch with the same schedule position."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    #: seconds of training so far (evaluation and diagnostics excluded), the time budget's clock
    elapsed: float = 0.0
    skipped_steps: int = 0
    #: best kNN accuracy seen by the periodic evaluation (best.pt holds that checkpoint)
    best_score: float = -math.inf
    #: non-finite steps in a row (not checkpointed: a resumed run starts counting again)
    nonfinite_in_a_row: int = 0

    CHECKPOINTED = ("epoch", "batch_in_epoch", "global_step", "elapsed", "skipped_steps",
                    "best_score")

    def to_checkpoint(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.CHECKPOINTED}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> TrainState:
        return cls(epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"],
                   global_step=state["global_step"], elapsed=state["elapsed"],
                   skipped_steps=state.get("skipped_steps", 0),
                   best_score=state.get("best_score", -math.inf))


@dataclass
class TrainResult:
    """What a training run returns."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    epoch: int = 0
    finished: bool = True
    #: why training stopped early: "stop_after_step", "SIGINT" or "SIGTERM"; None when finished
    stop_reason: str | None = None
    skipped_steps: int = 0


__all__ = ["TrainResult", "TrainState"]
