r"""Shuffling BatchNorm for MoCo's key encoder, in one process and under DDP.

MoCo (He et al., CVPR 2020, Sec. 3.3, "Shuffling BN") observed that batch normalisation lets the
model "cheat" the pretext task: a query and its positive key normalised with statistics of the
same samples carry a shared batch signature that the queued negatives (encoded in other batches)
lack. The reference implementation runs BN per GPU and, for the key encoder only, shuffles the
global batch across GPUs, so that "the batch statistics used to compute a query and its positive
key come from two different subsets".

Here a BN *group* is one forward call of the encoder (its BN layers normalise over that call's
samples). Each rank splits its local batch into ``groups`` contiguous ghost groups ("ghost BN",
Hoffer et al. 2017), which plays the part of the reference's per-GPU batches:

* queries: the local batch in its contiguous groups (:func:`forward_in_groups`);
* keys: the global batch is permuted by :func:`key_shuffle` and cut into groups of the same sizes.
  The permutation deals the samples round-robin over the query groups (in random order within
  each group), so two consecutive samples of the shuffled order always come from different query
  groups. Every key group of two or more samples therefore mixes several query groups and is never
  the query group of any of its members, and no key group holds more than about
  ``size / number of groups`` + 1 samples of one query group.

DDP path (:func:`shuffled_forward`): the key images are gathered from every rank
(:func:`contrastlab.distributed.gather_no_grad`), every rank computes the *same* permutation of the
``world_size * groups`` global query groups from a generator seeded identically on all ranks (no
broadcast needed), forwards its own slice of the shuffled batch in ``groups`` groups, gathers the
outputs and undoes the permutation. With ``groups=1`` this is exactly the reference
implementation's per-GPU shuffling BN; in one process all collectives are identities and the
groups alone separate queries from keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from contrastlab.distributed import gather_no_grad, rank, world_size


def effective_groups(batch: int, groups: int) -> int:
    """Ghost groups actually used for ``batch`` samples: at most ``groups``, each of >= 2 samples
    (a single-sample group has no batch statistics)."""
    return max(1, min(groups, batch // 2))


def group_sizes(batch: int, groups: int) -> list[int]:
    """Sizes of the contiguous groups ``Tensor.tensor_split(groups)`` makes of ``batch`` rows."""
    base, extra = divmod(batch, groups)
    return [base + 1] * extra + [base] * (groups - extra)


def forward_in_groups(fn: Callable[[Tensor], Tensor], x: Tensor, groups: int) -> Tensor:
    """``fn`` applied to each of ``groups`` contiguous chunks of ``x`` (one BN group each),
    outputs concatenated in the input order."""
    if groups <= 1:
        return fn(x)
    return torch.cat([fn(chunk) for chunk in x.tensor_split(groups)], dim=0)


def key_shuffle(sizes: list[int], generator: torch.Generator) -> Tensor:
    """Permutation ``sigma`` of ``sum(sizes)`` samples: position p of the shuffled batch holds
    sample ``sigma[p]``. Query group g holds the samples ``offset_g .. offset_g + sizes[g] - 1``.

    Members of each query group are put in random order, then dealt round-robin (one from each
    group in turn), so consecutive positions come from different query groups.
    """
    columns = max(sizes)
    table = torch.full((len(sizes), columns), -1, dtype=torch.long)
    start = 0
    for g, size in enumerate(sizes):
        table[g, :size] = start + torch.randperm(size, generator=generator)
        start += size
    dealt = table.t().reshape(-1)
    return dealt[dealt >= 0]


def _like(x: Tensor, reference: Tensor) -> Tensor:
    if reference.ndim == 4 and reference.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def shuffled_forward(
    fn: Callable[[Tensor], Tensor], images: Tensor, groups: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Run the key encoder ``fn`` on ``images`` (this rank's N key views) with shuffling BN.

    Args:
        fn: the key encoder (no gradient is recorded).
        images: (N, ...) local key views; all ranks pass the same N.
        groups: ghost groups per rank (reduced by :func:`effective_groups`).
        generator: seeded identically on every rank (the permutation must agree).

    Returns:
        ``(local, everything)``: the keys of this rank's N samples in input order, and the keys of
        the global batch in rank order (what MoCo enqueues).
    """
    n = images.shape[0]
    per_rank = effective_groups(n, groups)
    everyone = gather_no_grad(images)
    sizes = group_sizes(n, per_rank) * world_size()
    start = rank() * n
    if len(sizes) == 1:  # fewer than 4 samples in one process: nothing to shuffle with
        out = fn(images)
        return out, out
    sigma = key_shuffle(sizes, generator).to(images.device)
    mine = sigma[start : start + n]
    outputs = forward_in_groups(fn, _like(everyone[mine], images), per_rank)
    shuffled = gather_no_grad(outputs)
    keys = torch.empty_like(shuffled)
    keys[sigma] = shuffled
    return keys[start : start + n], keys


__all__ = ["effective_groups", "forward_in_groups", "group_sizes", "key_shuffle",
           "shuffled_forward"]
