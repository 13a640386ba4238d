"""``--micro-batch``: the gradient of the full batch's loss, one micro-batch of activations at a
time (GradCache; Gao, Zhang, Han & Callan, RepL4NLP 2021).

The trainer calls :func:`grad_cache_step` instead of ``method(views, labels)`` + backward. It
splits the views of the batch into micro-batches of ``micro_batch`` images (the last one smaller
when ``micro_batch`` does not divide the batch), embeds each with
:meth:`~contrastlab.methods.base.Method.embed_views`, computes
:meth:`~contrastlab.methods.base.Method.loss_from_embeddings` on all of them and back-propagates
through each micro-batch again (:func:`contrastlab.losses.grad_cache.grad_cache_backward`). For a
method whose ``training_step`` is ``loss_from_embeddings(embed_views(views))`` the gradients are
those of the full batch, except that batch norm in training mode sees each micro-batch's
statistics (and updates its running statistics twice per micro-batch). The price is one more
forward pass of the encoder per step.

Only for methods with ``supports_grad_cache`` (the configuration refuses the rest). Under
torchrun every process runs the passes on its own micro-batches (the loss gathers the embeddings
of all ranks with gradient, as in the plain step); the passes bypass DistributedDataParallel's
forward, so the trainer runs them under ``no_sync()`` and then averages the gradients over the
ranks once (:meth:`contrastlab.training.ddp.Distributed.average_gradients`), which is what DDP's
reducer would have done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from torch import Tensor

from contrastlab.errors import ConfigError
from contrastlab.losses.grad_cache import grad_cache_backward
from contrastlab.methods.base import Method, StepOutput


def check_micro_batch(micro_batch: int, local_batch: int, world_size: int) -> None:
    """Refuse a micro-batch larger than this process's batch (``world_size`` processes share
    the global batch)."""
    if micro_batch > local_batch:
        raise ConfigError(
            f"micro_batch {micro_batch} is larger than the batch ({local_batch} images per "
            f"process); pass --micro-batch {local_batch} or less"
        )


def grad_cache_step(
    method: Method,
    views: list[Tensor],
    labels: Tensor | None,
    micro_batch: int,
    *,
    autocast: contextlib.AbstractContextManager[object] | None = None,
    scale_loss: Callable[[Tensor], Tensor] | None = None,
) -> StepOutput:
    """Accumulate into ``.grad`` the gradient of ``method``'s loss on the batch ``views``.

    Args:
        method: a method with ``supports_grad_cache``.
        views: the batch's views (one tensor per view, the same images in each).
        labels: the batch's labels or None.
        micro_batch: images per micro-batch (the last one is smaller when it does not divide
            the batch).
        autocast: entered around every forward computation (embedding and loss), not around
            the backward passes; None: no autocast.
        scale_loss: applied to the loss before its backward (``GradScaler.scale``).

    Returns:
        The step's :class:`StepOutput` with the loss detached.
    """
    if not method.supports_grad_cache:
        raise ConfigError(f"method '{method.name}' cannot train with micro_batch (GradCache)")
    if micro_batch < 1:
        raise ConfigError(f"micro_batch must be >= 1, got {micro_batch}")
    context = autocast if autocast is not None else contextlib.nullcontext()
    chunks = [view.split(micro_batch) for view in views]
    micro_batches = [list(parts) for parts in zip(*chunks, strict=True)]
    outputs: list[StepOutput] = []

    def embed(*micro_views: Tensor) -> Tensor:
        with context:
            return method.embed_views(list(micro_views))

    def loss_fn(embeddings: Tensor) -> Tensor:
        with context:
            output = method.loss_from_embeddings(embeddings, labels)
        outputs.append(output)
        return output.loss

    result = grad_cache_backward(embed, micro_batches, loss_fn, scale_loss=scale_loss)
    return StepOutput(loss=result.loss, metrics=outputs[0].metrics)


__all__ = ["check_micro_batch", "grad_cache_step"]
