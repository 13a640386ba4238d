r"""Gradient caching: full-batch contrastive gradients with the activation memory of a micro-batch.

Gao, Zhang, Han & Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", RepL4NLP 2021 (GradCache).

A contrastive loss couples every embedding of the batch, so the batch cannot simply be split into
micro-batches with accumulated gradients. But the loss depends on the encoder parameters
:math:`\theta` only through the embeddings :math:`e = f_\theta(x)`, so by the chain rule

.. math::

    \frac{\partial L}{\partial \theta}
      = \sum_k \Big(\frac{\partial e_k}{\partial \theta}\Big)^{\!\top}
               \frac{\partial L}{\partial e_k}

over micro-batches :math:`x_k`. :func:`grad_cache_backward` computes it in three steps:

1. embed every micro-batch without autograd (no activations kept);
2. compute the loss on all embeddings and back-propagate to them: the cached gradients
   :math:`\partial L/\partial e_k` (memory O(N D), or less with a tiled loss);
3. embed each micro-batch again, with autograd, and back-propagate its cached gradient
   (``e_k.backward(grad_k)``), which accumulates into the parameters' ``.grad``.

The cost is one extra forward pass of the encoder. The random state (CPU and CUDA generators) is
saved before each micro-batch's first pass and restored for its second, so dropout and other
random layers see the same randomness both times; afterwards the generators continue from where
a single pass would have left them.

Exactness: the gradients equal those of one pass over the same micro-batches (so, for encoders
whose output for a sample does not depend on the rest of the batch, those of the full batch).
**Batch normalisation in training mode is not exact**: its statistics are those of each
micro-batch, not of the full batch (as in any micro-batching); use eval-mode / frozen BN, or
accept per-micro-batch statistics. Running statistics are also updated twice per micro-batch
(once per pass). Under DDP, wrap all but the last micro-batch's second pass in ``model.no_sync()``
so the gradients are all-reduced once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class GradCacheOutput:
    """The (detached) loss and embeddings of one :func:`grad_cache_backward` call."""

    loss: Tensor
    embeddings: Tensor


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _call(encode: Callable[..., Tensor], micro_batch: Any) -> Tensor:
    """``encode(*micro_batch)`` for a tuple or list, ``encode(micro_batch)`` otherwise."""
    if isinstance(micro_batch, (tuple, list)):
        return encode(*micro_batch)
    return encode(micro_batch)


def grad_cache_backward(
    encode: Callable[..., Tensor],
    micro_batches: Sequence[Any],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    scale_loss: Callable[[Tensor], Tensor] | None = None,
) -> GradCacheOutput:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(cat(encode(x) for x in
    micro_batches))`` with respect to every parameter, one micro-batch of activations at a time.

    Args:
        encode: maps one micro-batch to its (n_k, ...) embeddings (e.g. ``method.project`` or
            ``lambda x: head(backbone(x))``); called twice per micro-batch.
        micro_batches: the batch split along its first dimension, in order; an element that is
            a tuple or list is passed as several arguments (``encode(*element)``).
        loss_fn: the loss of the full batch, given the embeddings of all micro-batches
            concatenated along dimension 0 (a closure can bring labels or a second tower).
            Parameters it uses itself (e.g. a learned temperature) get their gradients too.
        scale_loss: applied to the loss before its backward, e.g. ``GradScaler.scale`` for
            float16 training; the returned loss is unscaled.

    Returns:
        :class:`GradCacheOutput` with the loss and the embeddings, both detached.

    Gradients accumulate like ``loss.backward()``: zero them before, step the optimiser after.
    """
    if len(micro_batches) == 0:
        raise ValueError("grad_cache_backward needs at least one micro-batch")
    states, embeddings = [], []
    with torch.no_grad():
        for micro_batch in micro_batches:
            states.append(_rng_state())
            embeddings.append(_call(encode, micro_batch))
    sizes = [e.shape[0] for e in embeddings]
    cached = torch.cat(embeddings).detach().requires_grad_()
    loss = loss_fn(cached)
    (scale_loss(loss) if scale_loss is not None else loss).backward()
    if cached.grad is None:
        raise ValueError("the loss does not depend on the embeddings (no gradient reached them)")
    after = _rng_state()
    for micro_batch, state, grad in zip(
        micro_batches, states, cached.grad.split(sizes), strict=True
    ):
        _set_rng_state(state)
        _call(encode, micro_batch).backward(grad)
    _set_rng_state(after)
    return GradCacheOutput(loss=loss.detach(), embeddings=cached.detach())


__all__ = ["GradCacheOutput", "grad_cache_backward"]
