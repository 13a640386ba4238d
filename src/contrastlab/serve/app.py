"""The HTTP service: a FastAPI application around an encoder (and optionally an index).

Routes (all JSON; images as multipart file fields or base64 strings in JSON):

* ``POST /v1/embed``: field ``images`` (repeatable) -> ``{"embeddings": [[...]], ...}``.
* ``POST /v1/similarity``: fields ``image_a`` and ``image_b`` -> ``{"cosine": c}``.
* ``POST /v1/search``: field ``image`` (and ``k``) -> the ``k`` nearest ids with cosine scores.
* ``GET /v1/info``: model, input size, embedding dimension, index size, limits.
* ``GET /healthz``: liveness (never needs the API key).
* ``GET /openapi.json`` and ``/docs``: the OpenAPI schema and its viewer.

Bad input is answered with ``{"error": code, "detail": message}`` and never a traceback: 400 for
bytes that are not an image (or a malformed multipart body), 401 without the API key (when one is
set), 404 for /v1/search without an index, 413 for a body over the size limit or an image over the
pixel limit, 415 for a body that is neither JSON nor multipart, 422 for missing, unknown or
mistyped fields (and base64 that does not decode), 503 when the batching queue is full, 500 (with
a generic message; the details go to the server log) if the encoder itself fails. Nothing taken
from a request is ever used as a file-system path: uploads are read into memory and file names
are ignored.
"""


import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from contrastlab import __version__
from contrastlab.serve.batching import MicroBatcher, ServerBusyError
from contrastlab.serve.deps import require
from contrastlab.serve.encoders import Encoder
from contrastlab.serve.images import (
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    NotAnImageError,
    decode_image,
)
from contrastlab.serve.index import VectorIndex
from contrastlab.serve.middleware import ApiKeyMiddleware, BodySizeLimitMiddleware
from contrastlab.serve.schemas import (
    MAX_K,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    SearchHitModel,
    SearchRequest,
    SearchResponse,
    SimilarityRequest,
    SimilarityResponse,
    request_body,
)

logger = logging.getLogger("contrastlab.serve")


@dataclass
class ServiceLimits:
    """What one request may contain."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 64

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class BatchSettings:
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024


@dataclass
class ApiError(Exception):
    """An expected failure, answered as ``{"error": code, "detail": detail}``."""

    status: int
    code: str
    detail: Any = field(default="")


# ---------------------------------------------------------------------- request parsing

def _content_kind(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        return "multipart"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    raise ApiError(415, "unsupported_media_type",
                   "send the body as application/json (base64 images) or multipart/form-data "
                   f"(image files), not {media or 'no content type'!r}")


def _validation_detail(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the offending input (it may be megabytes of base64)."""
    return [{"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
            for item in error.errors(include_input=False, include_url=False,
                                     include_context=False)]


def decode_base64(value: str, name: str) -> bytes:
    """Bytes of a base64 string or ``data:...;base64,`` URL; 422 if it is not base64."""
    text = value.strip()
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or ";base64" not in header:
            raise ApiError(422, "invalid_base64", f"{name}: a data URL must be base64-encoded")
        text = payload
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(422, "invalid_base64", f"{name}: not valid base64 ({error})") from error


async def _json_body(request: Any, model: type[BaseModel]) -> BaseModel:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # deep nesting recurses
        raise ApiError(422, "invalid_json",
                       f"the body is not valid JSON ({type(error).__name__})") from error
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, "invalid_request", _validation_detail(error)) from error


async def _multipart_fields(request: Any, files: dict[str, bool], texts: tuple[str, ...],
                            max_files: int) -> tuple[dict[str, list[bytes]], dict[str, str]]:
    """File fields (name -> contents, in order) and text fields of a multipart body.

    Unknown, missing, repeated (when not repeatable) or mistyped fields give 422.
    """
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=max_files, max_fields=len(files) + len(texts) + 4)
    try:
        found: dict[str, list[bytes]] = {name: [] for name in files}
        text_values: dict[str, str] = {}
        unknown = sorted({key for key in form.keys() if key not in files and key not in texts})
        if unknown:
            raise ApiError(422, "invalid_request",
                           f"unknown field(s) {unknown}; expected {sorted([*files, *texts])}")
        for key, value in form.multi_items():
            if key in texts:
                if isinstance(value, UploadFile) or key in text_values:
                    raise ApiError(422, "invalid_request", f"'{key}' must be one text field")
                text_values[key] = value
                continue
            if not isinstance(value, UploadFile):
                raise ApiError(422, "invalid_request",
                               f"'{key}' must be a file field (an image), not text")
            found[key].append(await value.read())
        for name, repeatable in files.items():
            if not found[name]:
                raise ApiError(422, "invalid_request", f"missing file field '{name}'")
            if not repeatable and len(found[name]) > 1:
                raise ApiError(422, "invalid_request", f"'{name}' must be given once")
        return found, text_values
    finally:
        await form.close()


# ---------------------------------------------------------------------- the service

class Service:
    """The encoder, the optional index, the batcher and the limits behind the routes."""

    def __init__(self, encoder: Encoder, index: VectorIndex | None = None,
                 limits: ServiceLimits | None = None,
                 batching: BatchSettings | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self.limits = limits or ServiceLimits()
        self.batching = batching or BatchSettings()
        self.batcher = MicroBatcher(self._run_batch, self.batching.max_batch,
                                    self.batching.max_wait_ms, self.batching.max_queue)

    def _run_batch(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.embed(images, normalize=True)

    def decode(self, blobs: list[tuple[str, bytes]]) -> np.ndarray:
        """uint8 (n, C, H, W) of named image blobs; ApiError 400/413 for bad ones."""
        card = self.encoder.card
        arrays = []
        for name, blob in blobs:
            try:
                arrays.append(decode_image(blob, card.channels, card.image_size,
                                           self.limits.max_pixels, name=name))
            except ImageTooLargeError as error:
                raise ApiError(413, "image_too_large", str(error)) from error
            except NotAnImageError as error:
                raise ApiError(400, "not_an_image", str(error)) from error
        return np.stack(arrays)

    async def embed_blobs(self, blobs: list[tuple[str, bytes]]) -> np.ndarray:
        from starlette.concurrency import run_in_threadpool

        if len(blobs) > self.limits.max_images:
            raise ApiError(422, "too_many_images",
                           f"{len(blobs)} images in one request; at most "
                           f"{self.limits.max_images}")
        images = await run_in_threadpool(self.decode, blobs)
        try:
            return await self.batcher.submit(images)
        except ServerBusyError as error:
            raise ApiError(503, "busy", str(error)) from error

    def info(self) -> dict[str, Any]:
        card = self.encoder.card
        index = None if self.index is None else {
            "kind": self.index.kind, "size": len(self.index), "dim": self.index.dim}
        stats = self.batcher.stats
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
            "limits": self.limits.to_json(),
        }


_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 413, 415, 422, 503)}


def create_app(service: Service, api_key: str | None = None) -> Any:
    """The FastAPI application, with the size-limit and (when ``api_key``) API-key middleware."""
    fastapi = require("fastapi", "contrastlab serve")
    require("python_multipart", "contrastlab serve (multipart uploads)")
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = fastapi.FastAPI(
        title="contrastlab encoder service", version=__version__, lifespan=lifespan,
        description="Embeddings, image similarity and nearest-neighbour search with a "
                    "contrastlab encoder.",
    )
    app.state.service = service

    def error_response(status: int, code: str, detail: Any,
                       headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status,
                            headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail),
                              getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError
                                ) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                   "type": e.get("type", "")} for e in error.errors()]
        return error_response(422, "invalid_request", detail)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
        logger.error("unexpected error while serving a request", exc_info=error)
        return error_response(500, "internal_error", "internal server error")

    async def image_blobs(request: Request, json_model: type[BaseModel],
                          files: dict[str, bool], texts: tuple[str, ...] = ()
                          ) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        """(field name, bytes) of every image in the body, and the other fields."""
        limits = service.limits
        if _content_kind(request.headers.get("content-type", "")) == "json":
            body = await _json_body(request, json_model)
            values = body.model_dump()
            blobs = []
            for name in files:
                value = values.pop(name)
                items = value if isinstance(value, list) else [value]
                if len(items) > limits.max_images:
                    raise ApiError(422, "too_many_images", f"{len(items)} images in one "
                                   f"request; at most {limits.max_images}")
                for position, item in enumerate(items):
                    label = f"{name}[{position}]" if isinstance(value, list) else name
                    blobs.append((label, decode_base64(item, label)))
            return blobs, values
        found, text_values = await _multipart_fields(request, files, texts,
                                                     max_files=limits.max_images + 2)
        blobs = [(f"{name}[{i}]" if files[name] else name, blob)
                 for name in files for i, blob in enumerate(found[name])]
        return blobs, dict(text_values)

    @app.get("/healthz", response_model=HealthResponse, tags=["service"])
    async def healthz() -> HealthResponse:
        """Liveness check (no API key needed)."""
        return HealthResponse(status="ok")

    @app.get("/v1/info", response_model=InfoResponse, responses=_ERRORS, tags=["service"])
    async def info() -> dict[str, Any]:
        """The model, its input, the embedding dimension, the index and the limits."""
        return service.info()

    @app.post("/v1/embed", response_model=EmbedResponse, responses=_ERRORS, tags=["encoder"],
              openapi_extra=request_body(EmbedRequest, {"images": True}))
    async def embed(request: Request) -> EmbedResponse:
        """L2-normalised embeddings of one or more images (field ``images``, repeatable)."""
        blobs, _ = await image_blobs(request, EmbedRequest, {"images": True})
        vectors = await service.embed_blobs(blobs)
        return EmbedResponse(embeddings=vectors.tolist(), count=len(vectors),
                             dim=int(vectors.shape[1]))

    @app.post("/v1/similarity", response_model=SimilarityResponse, responses=_ERRORS,
              tags=["encoder"],
              openapi_extra=request_body(SimilarityRequest, {"image_a": False,
                                                             "image_b": False}))
    async def similarity(request: Request) -> SimilarityResponse:
        """Cosine similarity of the embeddings of ``image_a`` and ``image_b``."""
        blobs, _ = await image_blobs(request, SimilarityRequest,
                                     {"image_a": False, "image_b": False})
        vectors = await service.embed_blobs(blobs)
        a, b = vectors.astype(np.float64)
        cosine = float(np.clip(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300),
                               -1.0, 1.0))
        return SimilarityResponse(cosine=cosine)

    k_text = {"k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}}

    @app.post("/v1/search", response_model=SearchResponse,
              responses={**_ERRORS, 404: {"model": ErrorResponse}}, tags=["index"],
              openapi_extra=request_body(SearchRequest, {"image": False}, k_text))
    async def search(request: Request) -> SearchResponse:
        """The ``k`` indexed items most cosine-similar to ``image``."""
        if service.index is None:
            raise ApiError(404, "no_index", "this server has no index; start it with --index")
        blobs, others = await image_blobs(request, SearchRequest, {"image": False}, ("k",))
        k = others.get("k", 10)
        if isinstance(k, str):
            if not k.strip().isdigit():
                raise ApiError(422, "invalid_request", "'k' must be a whole number")
            k = int(k.strip())
        if not 1 <= k <= MAX_K:
            raise ApiError(422, "invalid_request", f"'k' must be between 1 and {MAX_K}")
        vectors = await service.embed_blobs(blobs)
        hits = service.index.search(vectors, k)[0]
        return SearchResponse(k=k, hits=[SearchHitModel(**hit.to_json()) for hit in hits])

    # add_middleware puts the last one added outermost: the key is checked before any body is read.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=service.limits.max_body_bytes)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    return app
