"""What the routes share: the encoder, the optional index, the decoder and the micro-batcher,
and the limits of a request.

A request's images go through two bounded stages, each of which can refuse it at once: decoding
(:class:`~contrastlab.serve.decoding.Decoder`: per-image and per-request pixel limits, two small
thread pools, a deadline) and the model (:class:`~contrastlab.serve.batching.MicroBatcher`: a
bounded queue shared by concurrent requests). Between the stages, and while a request waits in
either, the client's connection is checked: the work of a client that has gone is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from contrastlab import __version__
from contrastlab.serve.batching import MicroBatcher, ServerBusyError
from contrastlab.serve.decoding import (
    ClientGoneError,
    DecodeBusyError,
    Decoder,
    DecodeSettings,
    DecodeTimeoutError,
    IsGone,
    RequestTooLargeError,
    watch,
)
from contrastlab.serve.encoders import Encoder
from contrastlab.serve.images import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    ImageLimits,
    ImageTooLargeError,
    NotAnImageError,
)
from contrastlab.serve.index import VectorIndex
from contrastlab.serve.request_parsing import ApiError, parse_json_images

#: Sent with 503 answers: when to try again, in seconds.
RETRY_AFTER = {"Retry-After": "1"}


@dataclass
class ServiceLimits:
    """What one request may contain (see docs/serving.md for the reasons of each default)."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_json_bytes: int = 4 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 64
    max_side: int = DEFAULT_MAX_SIDE
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    max_request_pixels: int = DEFAULT_MAX_PIXELS
    body_timeout_s: float = 30.0
    large_body_bytes: int = 1024 * 1024
    large_bodies: int = 1

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_pixels, self.max_side, self.max_aspect_ratio)


@dataclass
class BatchSettings:
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024


class Service:
    """The encoder, the optional index, the decoder, the batcher and the limits behind the
    routes."""

    def __init__(self, encoder: Encoder, index: VectorIndex | None = None,
                 limits: ServiceLimits | None = None,
                 batching: BatchSettings | None = None,
                 decoding: DecodeSettings | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self.limits = limits or ServiceLimits()
        self.batching = batching or BatchSettings()
        self.decoding = dataclasses.replace(decoding or DecodeSettings(),
                                            max_request_pixels=self.limits.max_request_pixels)
        card = encoder.card
        self.decoder = Decoder(card.channels, card.image_size, self.limits.image_limits,
                               self.decoding)
        self.batcher = MicroBatcher(self._run_batch, self.batching.max_batch,
                                    self.batching.max_wait_ms, self.batching.max_queue)

    def _run_batch(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.embed(images, normalize=True)

    async def embed_blobs(self, blobs: list[tuple[str, bytes]],
                          is_gone: IsGone | None = None) -> np.ndarray:
        """L2-normalised embeddings of named image blobs; ApiError for every expected failure.

        ``is_gone`` (the request's ``is_disconnected``) is polled while the request waits: the
        work of a client that has gone is dropped (answered 499, which nobody receives).
        """
        if len(blobs) > self.limits.max_images:
            raise ApiError(422, "too_many_images",
                           f"{len(blobs)} images in one request; at most "
                           f"{self.limits.max_images}")
        with self._api_errors():
            images = await self.decoder.decode(blobs, is_gone)
            return await watch(self.batcher.enqueue(images), is_gone)

    async def json_images(self, raw: bytes, model: type[Any], files: dict[str, bool]
                          ) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        """Parse a JSON body (and decode its base64) off the event loop: see
        :func:`~contrastlab.serve.request_parsing.parse_json_images`."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(parse_json_images, raw, model, files,
                                       self.limits.max_images)

    @contextlib.contextmanager
    def _api_errors(self) -> Iterator[None]:
        """The expected failures of decoding and batching, as ApiError."""
        try:
            yield
        except ImageTooLargeError as error:
            raise ApiError(413, "image_too_large", str(error)) from error
        except RequestTooLargeError as error:
            raise ApiError(413, "too_many_pixels", str(error)) from error
        except NotAnImageError as error:
            raise ApiError(400, "not_an_image", str(error)) from error
        except (DecodeBusyError, ServerBusyError) as error:
            raise ApiError(503, "busy", str(error), RETRY_AFTER) from error
        except DecodeTimeoutError as error:
            raise ApiError(503, "timeout", f"{error} ({self.decoding.timeout_s:g} s); retry "
                           "later or send smaller images", RETRY_AFTER) from error
        except ClientGoneError as error:
            raise ApiError(499, "client_closed_request", str(error)) from error

    def info(self) -> dict[str, Any]:
        card = self.encoder.card
        index = None if self.index is None else {
            "kind": self.index.kind, "size": len(self.index), "dim": self.index.dim}
        stats = self.batcher.stats
        decoding = self.decoding
        return {
            "model": {"method": card.method, "backbone": card.backbone,
                      "features": card.features, "format": card.format,
                      "quantization": card.quantization, "contrastlab": __version__},
            "input": {"image_size": card.image_size, "channels": card.channels,
                      "mean": list(card.mean), "std": list(card.std)},
            "embedding_dim": card.embedding_dim,
            "index": index,
            "batching": {"max_batch": self.batching.max_batch,
                         "max_wait_ms": self.batching.max_wait_ms,
                         "batches": stats.batches, "requests": stats.requests,
                         "mean_batch_images": round(stats.mean_batch, 3)},
            "decoding": {"small_request_cost": self.decoder.small_request_cost,
                         "light_request_cost": decoding.light_request_cost,
                         "image_cost_pixels": decoding.image_cost_pixels,
                         "timeout_s": decoding.timeout_s, "pools": self.decoder.stats()},
            "limits": self.limits.to_json(),
        }

    def close(self) -> None:
        """Release the worker threads."""
        self.decoder.close()
        self.batcher.close()
