r"""Running batch-norm estimates of ghost batch-norm groups spread over ranks.

A network run on G ghost groups one after the other (MoCo v2's shuffling BN in one process,
:mod:`contrastlab.models.shuffle_bn`) updates each batch-norm layer's running estimate G times,

.. math::  r_G = (1 - m)^G r_0 + \sum_{k=0}^{G-1} m (1 - m)^{G-1-k} s_k,

with ``s_k`` the statistic (mean, or unbiased variance) of group k and m the layer's momentum.
Under W processes each rank runs G' = G / W consecutive groups (rank r: groups r G' .. r G' + G'
- 1). The update is linear, so rank r can run its groups from a zero estimate, obtaining
:math:`l_r = \sum_{j<G'} m (1-m)^{G'-1-j} s_{rG'+j}`, and the ranks then agree on

.. math::  r_G = (1 - m)^G r_0 + \sum_r (1 - m)^{(W-1-r) G'} l_r

with one all-reduce: the one-process estimate, on every rank. Without this each rank would
keep estimates of its own groups only (the reference implementation's per-GPU statistics), and
evaluation, which uses the estimates, would differ from the one-process run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from contrastlab.distributed import all_reduce_sum, rank, world_size


@contextmanager
def running_statistics_over_ranks(modules: tuple[nn.Module, ...], groups_per_rank: int
                                  ) -> Iterator[None]:
    """Inside, run ``groups_per_rank`` ghost groups through ``modules`` (each a separate forward
    in training mode); on exit every batch-norm layer's running mean, variance and batch count
    are those of one process running the groups of all ranks in rank order. The identity in one
    process; layers with ``momentum=None`` (cumulative average) or no running estimates are left
    as they are."""
    layers = [m for module in modules for m in module.modules()
              if isinstance(m, _BatchNorm) and m.track_running_stats and m.momentum is not None
              and m.running_mean is not None and m.training]
    world = world_size()
    if world == 1 or not layers:
        yield
        return
    saved = []
    with torch.no_grad():
        for layer in layers:
            saved.append((layer.running_mean.clone(), layer.running_var.clone(),
                          layer.num_batches_tracked.clone()))
            layer.running_mean.zero_()
            layer.running_var.zero_()
    yield
    with torch.no_grad():
        weighted = []
        for layer in layers:
            decay = (1.0 - layer.momentum) ** groups_per_rank
            weight = decay ** (world - 1 - rank())
            weighted += [layer.running_mean.double() * weight,
                         layer.running_var.double() * weight]
        totals = all_reduce_sum(torch.cat(weighted)).split([t.numel() for t in weighted])
        for index, (layer, (mean0, var0, count0)) in enumerate(zip(layers, saved, strict=True)):
            decay_all = (1.0 - layer.momentum) ** (groups_per_rank * world)
            # new tensors, not in-place writes: autograd saved the buffers with the forward
            # pass's batch norms and checks that they are unchanged in the backward pass
            dtype = layer.running_mean.dtype
            layer.running_mean = (decay_all * mean0.double() + totals[2 * index]).to(dtype)
            layer.running_var = (decay_all * var0.double() + totals[2 * index + 1]).to(dtype)
            layer.num_batches_tracked = count0 + groups_per_rank * world


__all__ = ["running_statistics_over_ranks"]
