"""Micro-batching: concurrent requests share one forward pass.

Each request puts its images (n, C, H, W) and a future on an asyncio queue. One worker task takes
the first waiting request, then keeps taking requests until the batch holds ``max_batch`` images
or ``max_wait_ms`` have passed since the first one, runs the encoder once on the concatenation
(in a dedicated thread, so the event loop keeps accepting requests), and hands each request its
rows. Under load, requests also accumulate while a batch is being computed, so the next batch
fills without waiting. A request is never split; one larger than ``max_batch`` runs alone.

A full queue (``max_queue`` waiting requests) raises :class:`ServerBusyError` at once rather than
letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class ServerBusyError(RuntimeError):
    """The batching queue is full (HTTP 503)."""


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


@dataclass
class BatchStats:
    """Counters of the work done (for /v1/info and the benchmarks)."""

    requests: int = 0
    images: int = 0
    batches: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, requests: int, images: int) -> None:
        self.requests += requests
        self.images += images
        self.batches += 1
        self.largest_batch = max(self.largest_batch, images)
        self.sizes[images] = self.sizes.get(images, 0) + 1

    @property
    def mean_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0


class MicroBatcher:
    """Batches concurrent calls of ``run_batch`` (uint8 (N, C, H, W) -> float32 (N, D)).

    Args:
        run_batch: the encoder call, run in one dedicated worker thread.
        max_batch: most images per forward pass (>= 1; 1 turns batching off).
        max_wait_ms: how long the first request of a batch waits for company.
        max_queue: most requests waiting; more raise :class:`ServerBusyError`.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait_ms: float = 2.0, max_queue: int = 1024) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contrastlab-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._carry: _Pending | None = None

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        """Start the worker on the running loop (again, if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._carry = None
            self._worker = loop.create_task(self._run(self._queue), name="contrastlab-batcher")
        assert self._queue is not None
        return self._queue

    async def start(self) -> None:
        """Start the worker now (otherwise it starts with the first request)."""
        self._ensure_worker()

    async def stop(self) -> None:
        """Stop the worker; waiting requests fail with ServerBusyError."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(ServerBusyError("the server is shutting down"))

    def close(self) -> None:
        """Release the worker thread (after :meth:`stop`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, images: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Queue ``images`` (n, C, H, W); the future gets their embeddings. Cancelling it
        before its batch starts drops the images (a client that has gone)."""
        queue = self._ensure_worker()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait(_Pending(images, future))
        except asyncio.QueueFull as error:
            raise ServerBusyError(f"more than {self.max_queue} requests are waiting; retry "
                                  "later") from error
        return future

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of ``images`` (n, C, H, W), computed in a shared batch."""
        return await self.enqueue(images)

    async def _next(self, queue: asyncio.Queue[_Pending], timeout: float | None) -> _Pending | None:
        if self._carry is not None:
            pending, self._carry = self._carry, None
            return pending
        if timeout is None:
            return await queue.get()
        try:
            return queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(queue.get(), timeout)
        except asyncio.TimeoutError:  # not the builtin one before Python 3.11
            return None

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(queue, None)
            assert first is not None
            batch, count = [first], len(first.images)
            deadline = loop.time() + self.max_wait
            while count < self.max_batch:
                pending = await self._next(queue, deadline - loop.time())
                if pending is None:
                    break
                if count + len(pending.images) > self.max_batch:
                    self._carry = pending
                    break
                batch.append(pending)
                count += len(pending.images)
            live = [p for p in batch if not p.future.done()]  # skip cancelled requests
            if not live:
                continue
            images = np.concatenate([p.images for p in live]) if len(live) > 1 \
                else live[0].images
            try:
                outputs = await loop.run_in_executor(self._executor, self.run_batch, images)
            except Exception as error:  # the encoder failed: every request of the batch fails
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.stats.record(len(live), len(images))
            start = 0
            for pending in live:
                rows = len(pending.images)
                if not pending.future.done():
                    pending.future.set_result(outputs[start:start + rows])
                start += rows
