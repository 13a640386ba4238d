"""The HTTP service: a FastAPI application around an encoder (and optionally an index).

Routes (all JSON; images as multipart file fields or base64 strings in JSON):

* ``POST /v1/embed``: field ``images`` (repeatable) -> ``{"embeddings": [[...]], ...}``.
* ``POST /v1/similarity``: fields ``image_a`` and ``image_b`` -> ``{"cosine": c}``.
* ``POST /v1/search``: field ``image`` (and ``k``) -> the ``k`` nearest ids with cosine scores.
* ``GET /v1/info``: model, input size, embedding dimension, index size, limits.
* ``GET /healthz``: liveness (never needs the API key).
* ``GET /openapi.json`` and ``/docs``: the OpenAPI schema and its viewer.

Bad input is answered with ``{"error": code, "detail": message}`` and never a traceback; the
message names the field: 400 for bytes that are not an image (or a truncated or lying one, or a
malformed multipart body), 401 without the API key (when one is set), 404 for /v1/search without
an index, 408 for a body slower than the body timeout, 413 for a body over the size limit, an
image over a size limit or a request over the pixel budget, 415 for a body that is neither JSON
nor multipart, 422 for missing, unknown or mistyped fields (and base64 that does not decode),
503 when a decode pool or the batching queue is full or decoding ran past its deadline, 500
(with a generic message; the details go to the server log) if the encoder itself fails. The
limits are in :mod:`contrastlab.serve.service`, :mod:`contrastlab.serve.decoding`,
:mod:`contrastlab.serve.middleware` and :mod:`contrastlab.serve.server` (docs/serving.md has
them in one table). Nothing taken from a request is ever used as a file-system path: uploads
are read into memory and file names are ignored.
"""


import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from pydantic import BaseModel

from contrastlab import __version__
from contrastlab.serve.deps import require
from contrastlab.serve.middleware import ApiKeyMiddleware, BodySizeLimitMiddleware
from contrastlab.serve.request_parsing import (
    ApiError,
    content_kind,
    field_name,
    multipart_fields,
    parse_k,
)
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
from contrastlab.serve.service import BatchSettings, Service, ServiceLimits

__all__ = ["ApiError", "BatchSettings", "Service", "ServiceLimits", "create_app"]

logger = logging.getLogger("contrastlab.serve")


_ERRORS = {status: {"model": ErrorResponse}
           for status in (400, 401, 408, 413, 415, 422, 503)}


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
        return error_response(error.status, error.code, error.detail, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail),
                              getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError
                                ) -> JSONResponse:
        detail = "; ".join(f"{field_name(e.get('loc', ()))}: {e.get('msg', '')}"
                           for e in error.errors())
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
        if content_kind(request.headers.get("content-type", "")) == "json":
            return await service.json_images(await request.body(), json_model, files)
        found, text_values = await multipart_fields(request, files, texts,
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
        vectors = await service.embed_blobs(blobs, request.is_disconnected)
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
        vectors = await service.embed_blobs(blobs, request.is_disconnected)
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
        k = parse_k(others.get("k", 10))
        vectors = await service.embed_blobs(blobs, request.is_disconnected)
        hits = service.index.search(vectors, k)[0]
        return SearchResponse(k=k, hits=[SearchHitModel(**hit.to_json()) for hit in hits])

    # add_middleware puts the last one added outermost: the key is checked before any body is read.
    limits = service.limits
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=limits.max_body_bytes,
                       timeout_s=limits.body_timeout_s, large_bytes=limits.large_body_bytes,
                       large_bodies=limits.large_bodies, max_json_bytes=limits.max_json_bytes)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    return app
