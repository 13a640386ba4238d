"""Rebuilding a run's encoder from its checkpoint: ``load_run(run)`` and :class:`LoadedRun`.

``contrastlab.load(run)`` is this: the method rebuilt from ``RUN/checkpoints/last.pt`` (loaded
weights-only), in eval mode, with the preprocessing it was trained with, so that
``loaded.embed(uint8 images)`` gives the embeddings evaluation and serving use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastlab.config import flatten
from contrastlab.data import ImageDataset
from contrastlab.errors import CheckpointError, unknown_name
from contrastlab.methods import Method
from contrastlab.runs.checkpoint import load_checkpoint
from contrastlab.runs.directory import RunDirectory
from contrastlab.runs.inference import as_inference_input, inference_batch_size
from contrastlab.runs.meta import rebuild_method
from contrastlab.views import EvalTransform

FEATURES = ("backbone", "projector")
"""What evaluation embeds: backbone features (the standard) or the projector's output."""


def check_features(features: str) -> str:
    """Return ``features`` or raise ConfigError unless it is one of :data:`FEATURES`."""
    if features not in FEATURES:
        raise unknown_name("--features value", features, FEATURES)
    return features


@dataclass
class LoadedRun:
    """A method rebuilt from a run's checkpoint, in eval mode, with its metadata and the run's
    settings by flat key (``config["data"]``, ``config["seed"]``; for run files of any age)."""

    method: Method
    meta: dict[str, Any]
    config: dict[str, Any]

    @property
    def transform(self) -> EvalTransform:
        """Resize + normalise as in training (uint8 images in, float views out)."""
        m = self.meta
        return EvalTransform(m["image_size"], m["in_channels"], tuple(m["mean"]), tuple(m["std"]))

    def encoder(self, features: str = "backbone") -> Callable[[Tensor], Tensor]:
        """``method.encode`` (backbone features) or ``method.project`` (projector output)."""
        return self.method.project if check_features(features) == "projector" else \
            self.method.encode

    @torch.no_grad()
    def embed(self, images: Tensor, features: str = "backbone", batch_size: int | None = None
              ) -> Tensor:
        """float32 (N, D) embeddings of uint8 images (N, C, H, W), on the CPU (in batches of
        ``batch_size``; default: :func:`contrastlab.runs.inference.inference_batch_size`)."""
        device = next(self.method.parameters()).device
        batch_size = batch_size or inference_batch_size(device)
        encode, transform = self.encoder(features), self.transform
        outputs = [encode(as_inference_input(transform(images[start:start + batch_size]
                                                       .to(device)))).float().cpu()
                   for start in range(0, len(images), batch_size)]
        if not outputs:
            raise ValueError("no images to embed")
        return torch.cat(outputs)

    def features(self, dataset: ImageDataset, features: str = "backbone",
                 device: torch.device | str = "cpu") -> Tensor:
        """Frozen float32 (N, D) features of ``dataset`` (resized by :attr:`transform`)."""
        self.method.to(device)
        return self.embed(dataset.images, features)


def load_run(run: str | Path, device: torch.device | str = "cpu",
             backbone: nn.Module | None = None) -> LoadedRun:
    """Load ``RUN/checkpoints/last.pt`` (safely, weights only) and rebuild the method; a run
    trained on a backbone module given from Python needs that module again (``backbone``)."""
    run_dir = RunDirectory(run)
    if not run_dir.root.is_dir():
        raise CheckpointError(f"run directory '{run_dir.root}' does not exist")
    state = load_checkpoint(run_dir.checkpoint_path)
    if "model_meta" not in state or "model" not in state:
        raise CheckpointError(f"'{run_dir.checkpoint_path}' is not a contrastlab checkpoint")
    meta = state["model_meta"]
    method = rebuild_method(meta, backbone)
    method.load_state_dict(state["model"])
    method.to(device).eval()
    return LoadedRun(method, meta, flatten(state["config"]))


__all__ = ["FEATURES", "LoadedRun", "check_features", "load_run"]
