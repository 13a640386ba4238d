"""Pictures of what the model saw and learned: augmented views of a few images (the trainer's own
recipe) and nearest neighbours by cosine similarity of backbone features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastlab.data import ImageDataset


def to_display(images: Tensor, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> list[np.ndarray]:
    """Images (N, C, H, W) as arrays to draw: uint8 scaled to [0, 1], or float normalised images
    un-normalised with ``mean``/``std``; (H, W) for one channel, (H, W, 3) for three."""
    x = images.detach().cpu().float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    elif mean is not None and std is not None:
        m = torch.tensor(list(mean)).view(1, -1, 1, 1)
        s = torch.tensor(list(std)).view(1, -1, 1, 1)
        x = x * s + m
    x = x.clamp(0.0, 1.0)
    return [img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy() for img in x]


def pick_per_class(n: int, labels: Tensor | None, count: int, seed: int = 0) -> list[int]:
    """``count`` of ``range(n)``, seeded, from distinct classes as far as they go (so a grid
    shows different classes), sorted."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    count = min(count, n)
    if labels is None:
        return sorted(order[:count].tolist())
    chosen: list[int] = []
    seen: set[int] = set()
    for index in order.tolist():  # first pass: distinct classes
        if int(labels[index]) not in seen:
            seen.add(int(labels[index]))
            chosen.append(index)
        if len(chosen) == count:
            return sorted(chosen)
    for index in order.tolist():  # fewer classes than wanted: fill up
        if index not in chosen:
            chosen.append(index)
        if len(chosen) == count:
            break
    return sorted(chosen)


def augmented_views(config: dict[str, Any], meta: dict[str, Any], dataset: ImageDataset,
                    n_images: int = 6, n_views: int = 6,
                    seed: int = 0) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of [original, view 1, ..., view k] for ``n_images`` training images, made by the
    trainer's own view recipe (``contrastlab.runs.build_views``) with the run's
    configuration and normalisation. Returns the rows and the column titles."""
    from contrastlab.config import TrainConfig
    from contrastlab.runs.views import build_views

    train_config = TrainConfig.from_dict(config, "the run's config.yaml")
    views = build_views(train_config, meta["image_size"], meta["in_channels"],
                        tuple(meta["mean"]), tuple(meta["std"]))
    indices = pick_per_class(len(dataset), dataset.labels, n_images, seed)
    images = dataset.images[indices]
    generator = torch.Generator().manual_seed(seed)
    drawn: list[Tensor] = []
    while len(drawn) < n_views:
        drawn += views(images, generator)
    columns = [to_display(images)] + [to_display(v, meta["mean"], meta["std"]) for v in drawn]
    rows = [[column[r] for column in columns] for r in range(len(indices))]
    titles = ["original"] + [f"view {i + 1}" for i in range(len(drawn))]
    return rows, titles


def nearest_neighbours(query: Tensor, reference: Tensor, k: int = 8) -> tuple[Tensor, Tensor]:
    """Top-``k`` reference rows for each query row by cosine similarity: (indices, similarities),
    both (Q, k), most similar first."""
    q = torch.nn.functional.normalize(query.float(), dim=1)
    r = torch.nn.functional.normalize(reference.float(), dim=1)
    similarity = q @ r.T
    values, indices = similarity.topk(min(k, r.shape[0]), dim=1)
    return indices, values
