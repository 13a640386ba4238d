"""What every command needs about a run: its directory, checkpoints, model metadata, the encoder
rebuilt from it, the device and precision it runs on and the views it was trained with.

Below ``training``, ``eval``, ``serve`` and ``report``, which all use it; it imports none of them.
"""

from contrastlab.runs.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)
from contrastlab.runs.device import (
    memory_format_of,
    precision_warning,
    resolve_device,
    resolve_precision,
)
from contrastlab.runs.directory import RunDirectory, default_run_name
from contrastlab.runs.loading import FEATURES, LoadedRun, check_features, load_run
from contrastlab.runs.meta import build_backbone_of, model_meta, rebuild_method
from contrastlab.runs.views import build_views, num_local_crops

__all__ = ["CHECKPOINT_FORMAT", "FEATURES", "LoadedRun", "RunDirectory", "build_backbone_of",
           "build_views", "capture_rng_state", "check_features", "default_run_name",
           "load_checkpoint", "load_run", "memory_format_of", "model_meta", "num_local_crops",
           "precision_warning", "rebuild_method", "resolve_device", "resolve_precision",
           "restore_rng_state", "save_atomic"]
