"""Loggers: copies of the run's records in the experiment trackers users already have.

metrics.jsonl stays the source of truth; a logger is a callback that receives every record after
it was written there (``--log-to tensorboard,mlflow,wandb``) and turns its numbers into the
tracker's scalars, indexed by the global step:

* ``step`` records as ``train/<key>`` (loss, lr, images_per_s, data_wait (the share of
  the time waiting for batches), grad_norm, method metrics),
* ``epoch`` records as ``epoch/<key>``, ``eval`` and ``final`` records as ``eval/<key>`` and
  ``final/<key>``, ``diagnostics`` records as ``diagnostics/<space>/<key>``.

Each tracker is imported only when asked for; a missing package is a clear error before training
starts. TensorBoard writes event files to ``RUN/tensorboard/`` (``tensorboard --logdir RUN``);
MLflow logs to the tracking server or folder its own environment names (``MLFLOW_TRACKING_URI``,
default ``./mlruns``) with the run's settings as parameters; Weights & Biases logs with its own
settings (``WANDB_PROJECT``, ``WANDB_MODE=offline`` ...), the run's settings as its config.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING, Any

from contrastlab.errors import ConfigError
from contrastlab.training.callbacks import Callback

if TYPE_CHECKING:
    from contrastlab.training.trainer import Trainer

#: where a record's numbers go: record type -> tag prefix
PREFIXES = {"step": "train", "epoch": "epoch", "eval": "eval", "final": "final",
            "diagnostics": "diagnostics"}
#: bookkeeping fields that are not measurements
SKIPPED = {"type", "time", "step", "epoch"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of ``record`` as ``{tag: value}`` (nested dicts flattened with ``/``),
    or ``{}`` for records that are not measurements."""
    prefix = PREFIXES.get(str(record.get("type")))
    if prefix is None:
        return {}
    found: dict[str, float] = {}

    def visit(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(f"{path}/{key}", inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                found[path] = float(value)

    for key, value in record.items():
        if key not in SKIPPED:
            visit(f"{prefix}/{key}", value)
    return found


def require(module: str, name: str, package: str) -> Any:
    """Import ``module`` for logger ``name`` or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--log-to {name} needs the {package} package, which is not installed; "
            f"pip install {package} (or leave {name} out of --log-to)"
        ) from None


class TensorBoardLogger(Callback):
    """Scalars to ``RUN/tensorboard/`` through TensorBoard's own writer (via PyTorch)."""

    name = "tensorboard"

    def __init__(self) -> None:
        require("tensorboard", self.name, "tensorboard")
        self.writer: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(trainer.run.root / "tensorboard"))
        self.writer.add_text("config", "\n".join(
            f"    {key}: {value}" for key, value in trainer.config.flat().items()))

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record.get("step", 0))

    def on_close(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(Callback):
    """A run in MLflow: the settings as parameters, the records as metrics."""

    name = "mlflow"

    def __init__(self) -> None:
        self.mlflow = require("mlflow", self.name, "mlflow")
        self.active = False

    def on_train_start(self, trainer: Trainer) -> None:
        self.mlflow.start_run(run_name=trainer.run.root.name)
        self.active = True
        self.mlflow.log_params({key: str(value)[:250]
                                for key, value in trainer.config.flat().items()})

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        values = scalars(record)
        if self.active and values:
            # MLflow metric names may not hold every character; '/' is allowed
            self.mlflow.log_metrics(values, step=int(record.get("step", 0)))

    def on_close(self, trainer: Trainer) -> None:
        if self.active:
            self.mlflow.end_run()
            self.active = False


class WandbLogger(Callback):
    """A Weights & Biases run: the settings as its config, the records as its history."""

    name = "wandb"

    def __init__(self) -> None:
        self.wandb = require("wandb", self.name, "wandb")
        self.run: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.run = self.wandb.init(name=trainer.run.root.name, dir=str(trainer.run.root),
                                   config=trainer.config.flat())

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        values = scalars(record)
        if self.run is not None and values:
            self.run.log(values, step=int(record.get("step", 0)))

    def on_close(self, trainer: Trainer) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


LOGGER_CLASSES: dict[str, type[Callback]] = {
    "tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger,
}


def make_loggers(names: list[str]) -> list[Callback]:
    """The loggers named in ``--log-to`` (each checked to be importable now)."""
    return [LOGGER_CLASSES[name]() for name in names]


__all__ = ["LOGGER_CLASSES", "MLflowLogger", "TensorBoardLogger", "WandbLogger", "make_loggers",
           "scalars"]
