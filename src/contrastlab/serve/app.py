"""The HTTP service: a FastAPI application around an encoder (and optionally an index).

The model takes images (an image encoder), texts (a text run) or both (an image-text run, whose
images and texts share one space); ``/v1/info`` says which. Routes (all JSON; images as
multipart file fields or base64 strings in JSON, texts as text fields or JSON strings):

* ``POST /v1/embed``: field ``images`` and/or ``texts`` (repeatable) ->
  ``{"embeddings": [[...]], ...}`` (with both: the texts' in ``text_embeddings``).
* ``POST /v1/similarity``: ``image_a`` or ``text_a``, and ``image_b`` or ``text_b`` ->
  ``{"cosine": c}``.
* ``POST /v1/search``: field ``image`` or ``text`` (and ``k``) -> the ``k`` nearest ids with
  cosine scores.
* ``GET /v1/info``: inputs taken, model, input size, embedding dimension, index size, limits.
* ``GET /healthz``: liveness (never needs the API key).
* ``GET /openapi.json`` and ``/docs``: the OpenAPI schema and its viewer.

Bad input is answered with ``{"error": code, "detail": message}`` and never a traceback; the
message names the field: 400 for bytes that are not an image (or a truncated or lying one, or a
malformed multipart body), 401 without the API key (when one is set), 404 for /v1/search without
an index, 408 for a body slower than the body timeout, 413 for a body over the size limit, an
image over a size limit, a request over the pixel budget or a text over the length limit, 415
for a body that is neither JSON nor multipart, 422 for missing, unknown or mistyped fields (and
base64 that does not decode), too many images or texts, empty texts, and images or texts sent to
a model that does not take them,
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
    REQUESTS,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    SearchHitModel,
    SearchResponse,
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
        await service.start()
        try:
            yield
        finally:
            await service.stop()

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

    inputs = "+".join(service.model.inputs)  # "images", "texts" or "images+texts"
    text_field = {"type": "string", "minLength": 1}
    k_field = {"k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}}

    def body_schema(route: str, files: dict[str, bool], texts: dict[str, dict[str, Any]],
                    required_texts: list[str], extra: dict[str, dict[str, Any]] | None = None
                    ) -> dict[str, Any]:
        """The request body of ``route`` for the inputs served: image fields, text fields or
        both (then none is required alone)."""
        model = REQUESTS[route][inputs]
        extra = extra or {}
        if inputs == "images":
            return request_body(model, files, extra or None)
        if inputs == "texts":
            return request_body(model, {}, {**texts, **extra}, required_texts)
        return request_body(model, files, {**texts, **extra}, [])

    async def read_body(request: Request, route: str, files: dict[str, bool],
                        texts: tuple[str, ...] = (), repeated: tuple[str, ...] = ()
                        ) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        """(field name, bytes) of every image in the body, and the other fields (None or left
        out: not given). Validated as if both images and texts were served; the route refuses
        what is not (:meth:`Service.refuse_unserved`)."""
        limits = service.limits
        if content_kind(request.headers.get("content-type", "")) == "json":
            return await service.json_images(await request.body(),
                                             REQUESTS[route]["images+texts"], files)
        found, text_values = await multipart_fields(
            request, files, texts, max_files=limits.max_images + 2, repeated_texts=repeated,
            max_texts=limits.max_texts + 1 if repeated else 0, files_required=False)
        blobs = [(f"{name}[{i}]" if files[name] else name, blob)
                 for name in files for i, blob in enumerate(found[name])]
        return blobs, dict(text_values)

    def one_of(image: str, text: str, has_image: bool, has_text: bool) -> None:
        """422 unless exactly one of the fields ``image`` and ``text`` is given (the message
        starts with the field names, as the validation errors do)."""
        if has_image and has_text:
            raise ApiError(422, "invalid_request", f"{image}, {text}: give one of them, not "
                           "both")
        if not has_image and not has_text:
            names = {"images": image, "texts": text}
            what = {"images": "an image", "texts": "a text"}
            served = service.model.inputs
            raise ApiError(422, "invalid_request",
                           " or ".join(names[kind] for kind in served) + ": missing; give "
                           + " or ".join(what[kind] for kind in served))

    @app.get("/healthz", response_model=HealthResponse, tags=["service"])
    async def healthz() -> HealthResponse:
        """Liveness check (no API key needed)."""
        return HealthResponse(status="ok")

    @app.get("/v1/info", response_model=InfoResponse, responses=_ERRORS, tags=["service"])
    async def info() -> dict[str, Any]:
        """What the model takes (images, texts or both), the model, its input, the embedding
        dimension, the index and the limits."""
        return service.info()

    @app.post("/v1/embed", response_model=EmbedResponse, responses=_ERRORS, tags=["encoder"],
              response_model_exclude_none=True,
              openapi_extra=body_schema("embed", {"images": True},
                                        {"texts": {"type": "array", "items": text_field}},
                                        ["texts"]))
    async def embed(request: Request) -> EmbedResponse:
        """L2-normalised embeddings of images (field ``images``, repeatable), of texts (field
        ``texts``, repeatable) or, for an image-text run, of both (returned separately)."""
        blobs, values = await read_body(request, "embed", {"images": True},
                                        repeated=("texts",))
        texts = values.get("texts")
        service.refuse_unserved(bool(blobs), texts is not None)
        if not blobs and texts is None:
            raise ApiError(422, "invalid_request", " or ".join(service.model.inputs)
                           + ": missing; give at least one")
        named = [] if texts is None else [(f"texts[{i}]", t) for i, t in enumerate(texts)]
        if named:
            service.check_texts(named)  # before any image is decoded
        if not blobs:
            vectors = await service.embed_texts(named, request.is_disconnected)
            return EmbedResponse(embeddings=vectors.tolist(), count=len(vectors),
                                 dim=int(vectors.shape[1]), input="texts")
        vectors = await service.embed_blobs(blobs, request.is_disconnected)
        response = EmbedResponse(embeddings=vectors.tolist(), count=len(vectors),
                                 dim=int(vectors.shape[1]), input="images")
        if named:
            text_vectors = await service.embed_texts(named, request.is_disconnected)
            response.text_embeddings = text_vectors.tolist()
            response.text_count = len(text_vectors)
        return response

    @app.post("/v1/similarity", response_model=SimilarityResponse, responses=_ERRORS,
              tags=["encoder"],
              openapi_extra=body_schema("similarity", {"image_a": False, "image_b": False},
                                        {"text_a": text_field, "text_b": text_field},
                                        ["text_a", "text_b"]))
    async def similarity(request: Request) -> SimilarityResponse:
        """Cosine similarity of the embeddings of side a (``image_a`` or ``text_a``) and side
        b (``image_b`` or ``text_b``): image-image, text-text or, for an image-text run, in
        the shared space, text-image."""
        blobs, values = await read_body(request, "similarity",
                                        {"image_a": False, "image_b": False},
                                        ("text_a", "text_b"))
        images = {name for name, _ in blobs}
        texts = [(f"text_{side}", values[f"text_{side}"]) for side in "ab"
                 if values.get(f"text_{side}") is not None]
        service.refuse_unserved(bool(blobs), bool(texts))
        for side in "ab":
            one_of(f"image_{side}", f"text_{side}", f"image_{side}" in images,
                   values.get(f"text_{side}") is not None)
        if texts:
            service.check_texts(texts)
        found: dict[str, np.ndarray] = {}
        if blobs:
            image_vectors = await service.embed_blobs(blobs, request.is_disconnected)
            found.update(zip((name for name, _ in blobs), image_vectors, strict=True))
        if texts:
            text_vectors = await service.embed_texts(texts, request.is_disconnected)
            found.update(zip((name for name, _ in texts), text_vectors, strict=True))
        a, b = (next(found[name] for name in (f"image_{side}", f"text_{side}") if name in found)
                .astype(np.float64) for side in "ab")
        cosine = float(np.clip(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300),
                               -1.0, 1.0))
        return SimilarityResponse(cosine=cosine)

    @app.post("/v1/search", response_model=SearchResponse,
              responses={**_ERRORS, 404: {"model": ErrorResponse}}, tags=["index"],
              openapi_extra=body_schema("search", {"image": False}, {"text": text_field},
                                        ["text"], k_field))
    async def search(request: Request) -> SearchResponse:
        """The ``k`` indexed items most cosine-similar to the query ``image`` or ``text`` (for
        an image-text run, a text query finds images in an index of its images)."""
        if service.index is None:
            raise ApiError(404, "no_index", "this server has no index; start it with --index")
        blobs, values = await read_body(request, "search", {"image": False}, ("text", "k"))
        text = values.get("text")
        service.refuse_unserved(bool(blobs), text is not None)
        one_of("image", "text", bool(blobs), text is not None)
        k = parse_k(values.get("k", 10))
        if blobs:
            vectors = await service.embed_blobs(blobs, request.is_disconnected)
        else:
            vectors = await service.embed_texts([("text", text)], request.is_disconnected)
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
