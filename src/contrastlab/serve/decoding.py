"""Bounded image decoding for the service: a pixel budget per request, two small worker pools,
a deadline, and no work for clients that have gone.

Decoding an image costs CPU in proportion to the pixels it produces (about 20-70 ms per million
pixels on one core, depending on the format: PNG of 16-bit grey and lossless WebP are the
dearest), and an image file can be small while its pixels are many (a 4096 x 4096 PNG of one
colour is 16 kB). So a request is costed before anything is decoded:

1. the headers of its images are read (:func:`contrastlab.serve.images.open_image`: per-image
   limits, JPEGs set to decode at reduced scale) and their *decoded* pixels are added up; over
   :attr:`DecodeSettings.max_request_pixels` the request is refused (413) without decoding;
2. a request of at most :attr:`DecodeSettings.light_request_pixels` (the usual case: a few
   images near the model's input size) is decoded by the *light* pool, any other by the *heavy*
   pool, so that expensive requests queue behind each other and never in front of cheap ones;
3. each pool has a fixed number of threads (Pillow's decoders release the GIL) and admits at
   most ``threads + queue`` requests; the next one is answered 503 at once
   (:class:`DecodeBusyError`) instead of waiting without bound;
4. the decode stage of a request has a deadline (:attr:`DecodeSettings.timeout_s`) from the
   moment it is admitted, and the client's connection is checked while it waits: a request past
   its deadline (:class:`DecodeTimeoutError`, 503) or whose client has gone
   (:class:`ClientGoneError`) is dropped; if it was still queued it never starts, if it was
   being decoded the worker stops before its next image.
"""

from __future__ import annotations

import asyncio
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
    light_request_pixels: int = 1024 * 1024
    light_threads: int = 2
    light_queue: int = 64
    heavy_threads: int = 1
    heavy_queue: int = 2
    timeout_s: float = 10.0

    def check(self) -> None:
        if min(self.max_request_pixels, self.light_request_pixels, self.light_threads,
               self.heavy_threads) < 1 or min(self.light_queue, self.heavy_queue) < 0 \
                or not self.timeout_s > 0:
            raise ValueError(f"invalid decode settings {self}")


class Lane:
    """A pool of ``threads`` worker threads that admits at most ``threads + queue`` requests."""

    def __init__(self, name: str, threads: int, queue: int) -> None:
        self.name = name
        self.capacity = threads + queue
        self.admitted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads,
                                            thread_name_prefix=f"contrastlab-decode-{name}")

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
        self.settings = settings or DecodeSettings()
        self.settings.check()
        self.light = Lane("light", self.settings.light_threads, self.settings.light_queue)
        self.heavy = Lane("heavy", self.settings.heavy_threads, self.settings.heavy_queue)

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
            cost = sum(image.decoded_pixels for image in opened)
            lane = self.light if cost <= self.settings.light_request_pixels else self.heavy
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

    def stats(self) -> dict[str, int]:
        return {"light_admitted": self.light.admitted, "heavy_admitted": self.heavy.admitted,
                "light_refused": self.light.refused, "heavy_refused": self.heavy.refused}

    def close(self) -> None:
        self.light.close()
        self.heavy.close()
