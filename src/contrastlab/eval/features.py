"""Frozen features of a dataset under an encoder (no gradients, eval mode, batched)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from contrastlab.data.dataset import ImageDataset
from contrastlab.phases import phase


@torch.no_grad()
def extract_features(
    encode: Callable[[Tensor], Tensor],
    dataset: ImageDataset,
    transform: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> Tensor:
    """Run ``encode(transform(images))`` over the dataset in batches; returns float32 (N, D) on CPU.

    The caller puts the model in eval mode (batch-norm running statistics, no dropout).
    """
    outputs = []
    with phase(f"embedding {dataset.name}", total=len(dataset)) as progress:
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start : start + batch_size].to(device, non_blocking=True)
            outputs.append(encode(transform(images)).float().cpu())
            progress.advance(len(images))
    if not outputs:
        raise ValueError(f"{dataset.name}: no images to extract features from")
    return torch.cat(outputs)
