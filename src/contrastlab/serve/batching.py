"""Micro-batching: concurrent requests share one forward pass, small requests first.

Each request puts its images (n, C, H, W) and a future in a waiting list. One worker task takes
the first waiting request, then keeps taking requests until the batch holds ``max_batch`` images
or ``max_wait_ms`` have passed since the first one, runs the encoder once on the concatenation
(in a dedicated thread, so the event loop keeps accepting requests), and hands each request its
rows. Under load, requests also accumulate while a batch is being computed, so the next batch
fills without waiting. A request is never split; one larger than ``max_batch`` runs alone.

*First* means the smallest *virtual finish time*, ``arrival + n * image_weight_s``: a request of
``n`` images lets requests that arrived up to ``n * image_weight_s`` seconds after it go first
(shortest job first, with ageing so that large requests are never starved). A client sending
64 images per request then delays a client sending 2 images by at most the forward pass in
progress, instead of by every large request queued before it. ``image_weight_s=0`` is
first-come, first-served.

A full waiting list (``max_queue`` requests) raises :class:`ServerBusyError` at once rather than
letting latency grow without bound. A request whose future is cancelled before its batch starts
(its client has gone) is skipped.

The items need not be images: anything that ``len``, slicing and ``np.concatenate`` apply to
will do (the service batches texts as 1-D object arrays of strings the same way). Two batchers
may share one model thread (``executor``), so that one model runs one batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class ServerBusyError(RuntimeError):
    """The batching queue is full (HTTP 503)."""


@dataclass(order=True)
class _Pending:
    key: float
    order: int
    images: np.ndarray = field(compare=False)
    future: asyncio.Future[np.ndarray] = field(compare=False)


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
        image_weight_s: seconds of priority each image of a request costs it (see the module
            doc); 0 serves requests in arrival order.
        executor: the one-thread pool to run ``run_batch`` in, shared with another batcher
            (default: a pool of its own, released by :meth:`close`).
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_wait_ms: float = 2.0, max_queue: int = 1024,
                 image_weight_s: float = 0.01,
                 executor: ThreadPoolExecutor | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if image_weight_s < 0:
            raise ValueError(f"image_weight_s must be >= 0, got {image_weight_s}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.image_weight_s = image_weight_s
        self.stats = BatchStats()
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1,
                                                        thread_name_prefix="contrastlab-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Pending] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._order = itertools.count()

    def _ensure_worker(self) -> None:
        """Start the worker on the running loop (again, if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._waiting = []  # futures of another loop could never be resolved
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="contrastlab-batcher")

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
        waiting, self._waiting = self._waiting, []
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(ServerBusyError("the server is shutting down"))

    def close(self) -> None:
        """Release the worker thread (after :meth:`stop`), unless it is a shared one."""
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, images: np.ndarray) -> asyncio.Future[np.ndarray]:
        """Queue ``images`` (n, C, H, W); the future gets their embeddings. Cancelling it
        before its batch starts drops the images (a client that has gone)."""
        self._ensure_worker()
        loop = asyncio.get_running_loop()
        if len(self._waiting) >= self.max_queue:
            raise ServerBusyError(f"more than {self.max_queue} requests are waiting; retry "
                                  "later")
        future: asyncio.Future[np.ndarray] = loop.create_future()
        key = loop.time() + len(images) * self.image_weight_s
        heapq.heappush(self._waiting, _Pending(key, next(self._order), images, future))
        assert self._arrived is not None
        self._arrived.set()
        return future

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of ``images`` (n, C, H, W), computed in a shared batch."""
        return await self.enqueue(images)

    def _take(self, room: int | None) -> _Pending | None:
        """The first live waiting request if it fits in ``room`` images (None: any)."""
        while self._waiting and self._waiting[0].future.done():  # cancelled: client gone
            heapq.heappop(self._waiting)
        if not self._waiting or (room is not None and len(self._waiting[0].images) > room):
            return None
        return heapq.heappop(self._waiting)

    async def _wait_for_arrival(self, timeout: float | None) -> bool:
        assert self._arrived is not None
        self._arrived.clear()
        if timeout is not None and timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:  # not the builtin one before Python 3.11
            return False
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._take(None)
            if first is None:
                await self._wait_for_arrival(None)
                continue
            batch, count = [first], len(first.images)
            deadline = loop.time() + self.max_wait
            while count < self.max_batch:
                pending = self._take(self.max_batch - count)
                if pending is None:
                    if self._waiting and not self._waiting[0].future.done():
                        break  # the next one does not fit: it leads the next batch
                    if not await self._wait_for_arrival(deadline - loop.time()):
                        break
                    continue
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
