"""What the routes share: the encoder, the optional index, the decoder and the micro-batcher,
and the limits of a request.

The model is an image encoder, a text encoder (a text run or an exported text tower) or both (an
image-text run: :mod:`contrastlab.serve.text_service`). Texts are checked
(:mod:`contrastlab.serve.text_inputs`) and then micro-batched like images, by a second batcher
that shares the image batcher's model thread, so the model still runs one batch at a time.

A request's images go through two bounded stages, each of which can refuse it at once: decoding
(:class:`~contrastlab.serve.decoding.Decoder`: per-image and per-request pixel limits, two small
thread pools, a deadline) and the model (:class:`~contrastlab.serve.batching.MicroBatcher`: a
bounded queue shared by concurrent requests). Between the stages, and while a request waits in
either, the client's connection is checked: the work of a client that has gone is dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from contrastlab.serve.text_encoders import TextEncoder
from contrastlab.serve.text_inputs import DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_TEXTS, check_texts
from contrastlab.serve.text_service import ServedModel

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
    max_texts: int = DEFAULT_MAX_TEXTS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS

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
    """The model (image encoder, text tower or both), the optional index, the decoder, the
    batchers and the limits behind the routes."""

    def __init__(self, encoder: Encoder | None = None, index: VectorIndex | None = None,
                 limits: ServiceLimits | None = None,
                 batching: BatchSettings | None = None,
                 decoding: DecodeSettings | None = None,
                 texts: TextEncoder | None = None) -> None:
        if encoder is None and texts is None:
            raise ValueError("a service needs an image encoder, a text encoder or both")
        self.model = ServedModel(encoder, texts)
        self.encoder = encoder
        self.texts = texts
        self.index = index
        self.limits = limits or ServiceLimits()
        self.batching = batching or BatchSettings()
        self.decoding = dataclasses.replace(decoding or DecodeSettings(),
                                            max_request_pixels=self.limits.max_request_pixels)
        self._model_thread = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="contrastlab-model")
        batch = self.batching
        self.decoder: Decoder | None = None
        self.batcher: MicroBatcher | None = None
        self.text_batcher: MicroBatcher | None = None
        if encoder is not None:
            card = encoder.card
            self.decoder = Decoder(card.channels, card.image_size, self.limits.image_limits,
                                   self.decoding)
            self.batcher = MicroBatcher(self._run_batch, batch.max_batch, batch.max_wait_ms,
                                        batch.max_queue, executor=self._model_thread)
        if texts is not None:
            self.text_batcher = MicroBatcher(self._run_text_batch, batch.max_batch,
                                             batch.max_wait_ms, batch.max_queue,
                                             executor=self._model_thread)

    @property
    def _batchers(self) -> list[MicroBatcher]:
        return [b for b in (self.batcher, self.text_batcher) if b is not None]

    async def start(self) -> None:
        """Start the batchers' workers (with the application)."""
        for batcher in self._batchers:
            await batcher.start()

    async def stop(self) -> None:
        """Stop the batchers' workers; waiting requests fail with 503."""
        for batcher in self._batchers:
            await batcher.stop()

    def _run_batch(self, images: np.ndarray) -> np.ndarray:
        assert self.encoder is not None
        return self.encoder.embed(images, normalize=True)

    def _run_text_batch(self, texts: np.ndarray) -> np.ndarray:
        assert self.texts is not None
        return self.texts.embed_texts([str(t) for t in texts])

    def refuse_unserved(self, images: bool, texts: bool) -> None:
        """422 ``unsupported_input`` when a request gives images to a model without an image
        tower, or texts to one without a text tower."""
        served = self.model.inputs
        for kind, given in (("images", images), ("texts", texts)):
            if given and kind not in served:
                what = "an image encoder"
                if served == ["texts"]:
                    assert self.texts is not None
                    what = ("a text run (trained by `contrastlab train-text`)"
                            if self.texts.card.format == "pytorch" else "an exported text tower")
                raise ApiError(422, "unsupported_input",
                               f"this server serves {what}: it embeds {served[0]}, not {kind}")

    def check_texts(self, named: Sequence[tuple[str, object]]) -> list[str]:
        """The texts of named values once each passes the text checks and limits
        (:func:`~contrastlab.serve.text_inputs.check_texts`); ApiError naming the first that
        does not."""
        return check_texts(named, self.limits.max_texts, self.limits.max_text_chars)

    async def embed_texts(self, named: Sequence[tuple[str, object]],
                          is_gone: IsGone | None = None) -> np.ndarray:
        """L2-normalised embeddings of named texts (``("texts[0]", "a cat")``, ...), checked
        against the text limits first; ApiError for every expected failure."""
        self.refuse_unserved(False, True)
        assert self.text_batcher is not None
        texts = self.check_texts(named)
        batch = np.empty(len(texts), dtype=object)  # 1-D even if the strings look like lists
        batch[:] = texts
        with self._api_errors():
            return await watch(self.text_batcher.enqueue(batch), is_gone)

    async def embed_blobs(self, blobs: list[tuple[str, bytes]],
                          is_gone: IsGone | None = None) -> np.ndarray:
        """L2-normalised embeddings of named image blobs; ApiError for every expected failure.

        ``is_gone`` (the request's ``is_disconnected``) is polled while the request waits: the
        work of a client that has gone is dropped (answered 499, which nobody receives).
        """
        self.refuse_unserved(True, False)
        assert self.decoder is not None and self.batcher is not None
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
        index = None if self.index is None else {
            "kind": self.index.kind, "size": len(self.index), "dim": self.index.dim}
        batching: dict[str, Any] = {"max_batch": self.batching.max_batch,
                                    "max_wait_ms": self.batching.max_wait_ms}
        model_input: dict[str, Any] = {}
        decoding_info = None
        if self.encoder is not None:
            assert self.batcher is not None and self.decoder is not None
            card = self.encoder.card
            model_input.update({"image_size": card.image_size, "channels": card.channels,
                                "mean": list(card.mean), "std": list(card.std)})
            stats = self.batcher.stats
            batching.update({"batches": stats.batches, "requests": stats.requests,
                             "mean_batch_images": round(stats.mean_batch, 3)})
            decoding = self.decoding
            decoding_info = {"small_request_cost": self.decoder.small_request_cost,
                             "light_request_cost": decoding.light_request_cost,
                             "image_cost_pixels": decoding.image_cost_pixels,
                             "timeout_s": decoding.timeout_s, "pools": self.decoder.stats()}
        if self.texts is not None:
            assert self.text_batcher is not None
            model_input["text"] = {"max_tokens": self.texts.card.max_length,
                                   "max_chars": self.limits.max_text_chars}
            stats = self.text_batcher.stats
            batching.update({"text_batches": stats.batches, "text_requests": stats.requests,
                             "mean_batch_texts": round(stats.mean_batch, 3)})
        return {
            "inputs": self.model.inputs,
            "model": self.model.model_json(),
            "input": model_input,
            "embedding_dim": self.model.embedding_dim,
            "index": index,
            "batching": batching,
            "decoding": decoding_info,
            "limits": self.limits.to_json(),
        }

    def close(self) -> None:
        """Release the worker threads."""
        if self.decoder is not None:
            self.decoder.close()
        for batcher in self._batchers:
            batcher.close()
        self._model_thread.shutdown(wait=False, cancel_futures=True)
