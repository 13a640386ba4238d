"""Bounded image decoding for the service: a pixel budget per request, worker pools by cost,
a deadline, and no work for clients that have gone.

Decoding an image costs CPU in proportion to the pixels it produces (about 20-50 ms per million
pixels on one core, depending on the format: RGBA PNG, lossless WebP and deflated TIFF are the
dearest), plus a fixed cost per image, and an image file can be small while its pixels are many
(a 4096 x 4096 PNG of one colour is 16 kB). So a request is costed before anything is decoded:

1. the headers of its images are read (:func:`contrastlab.serve.images.open_image`: per-image
   limits, JPEGs set to decode at reduced scale) and their *decoded* pixels are added up; over
   :attr:`DecodeSettings.max_request_pixels` the request is refused (413) without decoding;
2. its cost is its decoded pixels plus :attr:`DecodeSettings.image_cost_pixels` per image; a
   *small* request (no dearer than :attr:`DecodeSettings.small_request_images` images of the
   model's input size: what a client that resizes its images sends) is decoded by the small
   pool, one up to :attr:`DecodeSettings.light_request_cost` by the light pool, any other by the
   heavy pool, so that requests queue only behind requests of their own class and small ones are
   never stuck behind expensive ones;
3. each pool has a fixed number of threads (Pillow's decoders release the GIL) and admits at
   most ``threads + queue`` requests; the next one is answered 503 at once
   (:class:`DecodeBusyError`) instead of waiting without bound. The threads of the light and
   heavy pools run at a lower CPU priority (``nice`` :attr:`DecodeSettings.background_nice`,
   Linux): when the CPU is short, the event loop, the small pool and the model go first, so
   expensive requests slow down each other rather than everyone;
4. the decode stage of a request has a deadline (:attr:`DecodeSettings.timeout_s`) from the
   moment it is admitted, and the client's connection is checked while it waits: a request past
   its deadline (:class:`DecodeTimeoutError`, 503) or whose client has gone
   (:class:`ClientGoneError`) is dropped; if it was still queued it never starts, if it was
   being decoded the worker stops before its next image.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from contrastlab.serve.images import ImageLimits, OpenedImage, open_image

T = TypeVar("T")
IsGone = Callable[[], Awaitable[bool]]

#: How often a waiting request checks that its client is still connected, in seconds.
POLL_S = 0.05


class DecodeBusyError(RuntimeError):
    """A decode pool is full (HTTP 503)."""


class DecodeTimeoutError(RuntimeError):
    """The decode stage of a request ran past its deadline (HTTP 503)."""


class ClientGoneError(RuntimeError):
    """The client closed the connection; its work was dropped."""


class RequestTooLargeError(ValueError):
    """The images of a request decode to more pixels than the per-request budget (HTTP 413)."""


@dataclass(frozen=True)
class DecodeSettings:
    """Limits of the decode stage (see the module doc)."""

    max_request_pixels: int = 4096 * 4096
    image_cost_pixels: int = 16_384
    small_request_images: int = 4
    light_request_cost: int = 2 * 1024 * 1024
    small_threads: int = 1
    small_queue: int = 64
    light_threads: int = 2
    light_queue: int = 16
    heavy_threads: int = 1
    heavy_queue: int = 2
    background_nice: int = 10
    timeout_s: float = 10.0

    def check(self) -> None:
        if min(self.max_request_pixels, self.small_request_images, self.light_request_cost,
               self.small_threads, self.light_threads, self.heavy_threads) < 1 \
                or min(self.image_cost_pixels, self.small_queue, self.light_queue,
                       self.heavy_queue, self.background_nice) < 0 or not self.timeout_s > 0:
            raise ValueError(f"invalid decode settings {self}")


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (a lower CPU priority; per thread on
    Linux). Where that is not possible it does nothing."""
    if nice > 0 and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(current + nice, 19))


class Lane:
    """A pool of ``threads`` worker threads (at ``nice`` lower priority) that admits at most
    ``threads + queue`` requests."""

    def __init__(self, name: str, threads: int, queue: int, nice: int = 0) -> None:
        self.name = name
        self.capacity = threads + queue
        self.admitted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads,
                                            thread_name_prefix=f"contrastlab-decode-{name}",
                                            initializer=lower_priority, initargs=(nice,))

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Start ``job`` (or queue it); DecodeBusyError when the lane is full."""
        with self._lock:
            if self.admitted >= self.capacity:
                self.refused += 1
                raise DecodeBusyError(
                    f"the server is decoding as many {self.name} requests as it takes "
                    f"({self.capacity}); retry in a moment")
            self.admitted += 1
        future = self._executor.submit(job)
        future.add_done_callback(self._release)  # also runs when a queued job is cancelled
        return future

    def _release(self, _future: Future[T]) -> None:
        with self._lock:
            self.admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def watch(future: asyncio.Future[T], is_gone: IsGone | None,
                deadline: float | None = None) -> T:
    """The result of ``future``, checking every :data:`POLL_S` that the client is still there
    and that ``deadline`` (event-loop time) has not passed; otherwise ``future`` is cancelled
    and ClientGoneError or DecodeTimeoutError raised."""
    loop = asyncio.get_running_loop()
    while True:
        timeout = POLL_S if deadline is None else min(POLL_S, max(deadline - loop.time(), 0))
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if done:
            return future.result()
        if is_gone is not None and await is_gone():
            future.cancel()
            raise ClientGoneError("the client closed the connection")
        if deadline is not None and loop.time() >= deadline:
            future.cancel()
            raise DecodeTimeoutError("decoding took longer than allowed")


def _close_if_cancelled(job: Future[np.ndarray], opened: list[OpenedImage]) -> None:
    if job.cancelled():  # it never started, so it could not close them itself
        for image in opened:
            image.close()


class Decoder:
    """Costs, admits and decodes the images of requests (see the module doc)."""

    def __init__(self, channels: int, size: int, limits: ImageLimits | None = None,
                 settings: DecodeSettings | None = None) -> None:
        self.channels = channels
        self.size = size
        self.limits = limits or ImageLimits()
        self.settings = settings = settings or DecodeSettings()
        settings.check()
        #: cost of the most expensive request the small pool takes
        self.small_request_cost = settings.small_request_images * (
            max(size, 32) ** 2 + settings.image_cost_pixels)
        nice = settings.background_nice
        self.small = Lane("small", settings.small_threads, settings.small_queue)
        self.light = Lane("light", settings.light_threads, settings.light_queue, nice)
        self.heavy = Lane("heavy", settings.heavy_threads, settings.heavy_queue, nice)

    def cost(self, opened: Sequence[OpenedImage]) -> int:
        """Decoded pixels of ``opened`` plus the fixed cost per image."""
        return sum(image.decoded_pixels + self.settings.image_cost_pixels for image in opened)

    def lane(self, cost: int) -> Lane:
        """The pool that decodes a request of ``cost``."""
        if cost <= self.small_request_cost:
            return self.small
        return self.light if cost <= self.settings.light_request_cost else self.heavy

    def open_all(self, blobs: Sequence[tuple[str, bytes]]) -> list[OpenedImage]:
        """Read every header; refuse the request when its decoded pixels exceed the budget."""
        opened: list[OpenedImage] = []
        try:
            for name, blob in blobs:
                opened.append(open_image(blob, self.size, self.limits, name))
            total = sum(image.decoded_pixels for image in opened)
            if total > self.settings.max_request_pixels:
                raise RequestTooLargeError(
                    f"the {len(opened)} image(s) of this request decode to {total:,} pixels, "
                    f"over the limit of {self.settings.max_request_pixels:,} pixels per "
                    "request; send fewer or smaller images")
        except BaseException:
            for image in opened:
                image.close()
            raise
        return opened

    def _decode_all(self, opened: list[OpenedImage], stop: threading.Event) -> np.ndarray:
        arrays = []
        try:
            for image in opened:
                if stop.is_set():
                    raise CancelledError
                arrays.append(image.decode(self.channels, self.size))
        finally:
            for image in opened:
                image.close()
        return np.stack(arrays)

    async def decode(self, blobs: Sequence[tuple[str, bytes]],
                     is_gone: IsGone | None = None) -> np.ndarray:
        """uint8 (n, C, size, size) of the named image blobs of one request.

        Raises:
            NotAnImageError, ImageTooLargeError: a bad image (400 / 413).
            RequestTooLargeError: over the per-request pixel budget (413).
            DecodeBusyError, DecodeTimeoutError: over capacity or past the deadline (503).
            ClientGoneError: the client went away.
        """
        from starlette.concurrency import run_in_threadpool

        opened = await run_in_threadpool(self.open_all, blobs)
        stop = threading.Event()
        job: Future[np.ndarray] | None = None
        try:
            if is_gone is not None and await is_gone():
                raise ClientGoneError("the client closed the connection")
            lane = self.lane(self.cost(opened))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.timeout_s
            job = lane.submit(lambda: self._decode_all(opened, stop))
            job.add_done_callback(lambda done: _close_if_cancelled(done, opened))
            return await watch(asyncio.wrap_future(job), is_gone, deadline)
        except BaseException:
            stop.set()  # a running job stops before its next image (and closes the images)
            if job is None:
                for image in opened:
                    image.close()
            raise

    def stats(self) -> dict[str, dict[str, int]]:
        return {lane.name: {"threads_and_queue": lane.capacity, "admitted": lane.admitted,
                            "refused": lane.refused}
                for lane in (self.small, self.light, self.heavy)}

    def close(self) -> None:
        for lane in (self.small, self.light, self.heavy):
            lane.close()
