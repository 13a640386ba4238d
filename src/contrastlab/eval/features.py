"""Frozen features of a dataset under an encoder (no gradients, eval mode, batched).

The dataset is an image source (:class:`contrastlab.data.dataset.ImageSource`): images held in
memory (:class:`~contrastlab.data.ImageDataset`) or shards decoded in one streamed pass
(:class:`~contrastlab.data.streamed_images.StreamedImages`); either way only the features are
kept, in a :class:`~contrastlab.eval.feature_store.FeatureStore` (a temporary file above the
feature-memory cap).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from contrastlab.data.dataset import ImageSource
from contrastlab.eval.feature_store import FeatureStore
from contrastlab.phases import phase
from contrastlab.runs.inference import as_inference_input, inference_batch_size


@torch.no_grad()
def extract_features(
    encode: Callable[[Tensor], Tensor],
    dataset: ImageSource,
    transform: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Run ``encode(transform(images))`` over the dataset in batches; returns float32 (N, D) on CPU
    (over a temporary file when ``4 N D`` bytes exceed ``max_memory``, see
    :mod:`contrastlab.eval.feature_store`).

    The caller puts the model in eval mode (batch-norm running statistics, no dropout). Batches
    hold ``batch_size`` images (default: :func:`contrastlab.runs.inference.inference_batch_size`)
    in the channels-last layout.
    """
    batch_size = batch_size or inference_batch_size(device)
    store: FeatureStore | None = None
    with phase(f"embedding {dataset.name}", total=len(dataset)) as progress:
        for images in dataset.batches(batch_size):
            views = as_inference_input(transform(images.to(device, non_blocking=True)))
            output = encode(views).float().cpu()
            if store is None:
                store = FeatureStore(len(dataset), output.shape[1], max_memory)
            store.add(output)
            progress.advance(len(images))
    if store is None:
        raise ValueError(f"{dataset.name}: no images to extract features from")
    return store.result()
