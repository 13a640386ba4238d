"""Running a network over multi-crop views: one batch per run of same-size views.

SwAV and DINO (Caron et al. 2020, 2021) receive 2 global views then V smaller local views; their
reference implementations concatenate consecutive views of the same resolution and run the
backbone once per resolution, so batch-norm normalises each resolution with its own batch
statistics.

The running batch-norm statistics (what evaluation uses) are estimated here from the first group
only, the global views, which have the size evaluation images have: local crops of very small
images have quite different statistics (the measurement is in docs/methods.md, swav). The local
groups are still normalised with their own batch statistics during training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def running_statistics_frozen(*modules: nn.Module) -> Iterator[None]:
    """Batch-norm layers of ``modules`` use batch statistics without updating their running
    estimates (``track_running_stats`` off while inside)."""
    layers = [m for module in modules for m in module.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


def same_size_groups(views: list[Tensor]) -> list[tuple[int, int]]:
    """``(start, end)`` of every run of consecutive views with the same shape."""
    if not views:
        raise ValueError("no views to encode")
    batch = views[0].shape[0]
    if any(v.shape[0] != batch for v in views):
        raise ValueError(f"every view must hold the same images, got batch sizes "
                         f"{[v.shape[0] for v in views]}")
    groups = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[1:] == views[start].shape[1:]:
            end += 1
        groups.append((start, end))
        start = end
    return groups


def forward_multi_crop(network: Callable[[Tensor], Tensor], views: list[Tensor],
                       *modules: nn.Module) -> Tensor:
    """``network`` applied to every view, (V * B, ...), view 0's rows first.

    Consecutive views with the same size are one batch. The batch-norm layers of ``modules``
    (the parts of ``network``) update their running statistics on the first group only.
    """
    outputs = []
    for index, (start, end) in enumerate(same_size_groups(views)):
        group = views[start] if end == start + 1 else torch.cat(views[start:end])
        if index == 0:
            outputs.append(network(group))
        else:
            with running_statistics_frozen(*modules):
                outputs.append(network(group))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
