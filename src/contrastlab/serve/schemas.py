"""Request and response bodies of the HTTP service (pydantic models, strict types).

JSON requests carry images as base64 strings (optionally as ``data:image/...;base64,`` URLs)
and texts as strings; multipart requests carry images as file fields and texts as text fields
of the same names.

Each route has a model per kind of served model (:data:`REQUESTS`): images only (an image
encoder), texts only (a text run), or both (an image-text run, every field optional). Bodies are
validated against the last one whatever is served, so that a text sent to an image encoder is
answered "this server embeds images, not texts" rather than "unknown field"; the first two
describe the body in the OpenAPI schema of a server that takes one kind.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EmbedRequest(_Strict):
    """``{"images": [base64, ...]}``: one or more images to embed."""

    images: list[str] = Field(min_length=1, description="base64-encoded images")


class SimilarityRequest(_Strict):
    """``{"image_a": base64, "image_b": base64}``."""

    image_a: str = Field(description="base64-encoded image")
    image_b: str = Field(description="base64-encoded image")


class SearchRequest(_Strict):
    """``{"image": base64, "k": 10}``."""

    image: str = Field(description="base64-encoded query image")
    k: int = Field(default=10, ge=1, le=MAX_K, description="number of neighbours")


Texts = Annotated[list[str], Field(min_length=1, description="texts to embed")]
Images = Annotated[list[str], Field(min_length=1, description="base64-encoded images")]


class TextEmbedRequest(_Strict):
    """``{"texts": [text, ...]}``: one or more texts to embed."""

    texts: Texts


class ImageTextEmbedRequest(_Strict):
    """``{"images": [...], "texts": [...]}``: images, texts, or both (embedded separately)."""

    images: Images | None = None
    texts: Texts | None = None


class TextSimilarityRequest(_Strict):
    """``{"text_a": text, "text_b": text}``."""

    text_a: str = Field(description="a text")
    text_b: str = Field(description="a text")


class ImageTextSimilarityRequest(_Strict):
    """Side a: ``image_a`` or ``text_a``; side b: ``image_b`` or ``text_b``."""

    image_a: str | None = Field(default=None, description="base64-encoded image (or text_a)")
    text_a: str | None = Field(default=None, description="a text (or image_a)")
    image_b: str | None = Field(default=None, description="base64-encoded image (or text_b)")
    text_b: str | None = Field(default=None, description="a text (or image_b)")


class TextSearchRequest(_Strict):
    """``{"text": text, "k": 10}``."""

    text: str = Field(description="the query text")
    k: int = Field(default=10, ge=1, le=MAX_K, description="number of neighbours")


class ImageTextSearchRequest(_Strict):
    """``{"image": base64, "k": 10}`` or ``{"text": text, "k": 10}``."""

    image: str | None = Field(default=None, description="base64-encoded query image (or text)")
    text: str | None = Field(default=None, description="the query text (or image)")
    k: int = Field(default=10, ge=1, le=MAX_K, description="number of neighbours")


#: route -> served inputs -> the request model describing the body (the last one validates)
REQUESTS: dict[str, dict[str, type[BaseModel]]] = {
    "embed": {"images": EmbedRequest, "texts": TextEmbedRequest,
              "images+texts": ImageTextEmbedRequest},
    "similarity": {"images": SimilarityRequest, "texts": TextSimilarityRequest,
                   "images+texts": ImageTextSimilarityRequest},
    "search": {"images": SearchRequest, "texts": TextSearchRequest,
               "images+texts": ImageTextSearchRequest},
}


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(
        description="the embeddings of `images`, or of `texts` when the request has no images")
    count: int
    dim: int
    normalized: bool = True
    input: str = Field(default="images",
                       description="what `embeddings` holds: `images` or `texts`")
    text_embeddings: list[list[float]] | None = Field(
        default=None, description="with both images and texts: the texts' embeddings")
    text_count: int | None = None


class SimilarityResponse(BaseModel):
    cosine: float = Field(description="cosine similarity of the two embeddings, in [-1, 1]")


class SearchHitModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    rank: int
    id: str
    score: float = Field(description="cosine similarity")
    label: int | None = None
    class_name: str | None = Field(default=None, alias="class",
                                   description="the label's class name, when the index has it")


class SearchResponse(BaseModel):
    hits: list[SearchHitModel]
    k: int


class InfoResponse(BaseModel):
    inputs: list[str] = Field(description="what the served model embeds: `images`, `texts` or "
                              "both")
    model: dict[str, Any]
    input: dict[str, Any]
    embedding_dim: int
    index: dict[str, Any] | None
    batching: dict[str, Any]
    decoding: dict[str, Any] | None
    limits: dict[str, Any]


class HealthResponse(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    error: str = Field(description="a short machine-readable code")
    detail: Any = Field(description="what was wrong, for a person")


def multipart_schema(files: dict[str, bool], texts: dict[str, dict[str, Any]] | None = None,
                     required: list[str] | None = None) -> dict[str, Any]:
    """OpenAPI schema of a multipart body: ``files`` maps field name -> repeatable; ``required``
    defaults to every file field."""
    properties: dict[str, Any] = {}
    for name, repeatable in files.items():
        binary = {"type": "string", "format": "binary"}
        properties[name] = {"type": "array", "items": binary} if repeatable else binary
    properties.update(texts or {})
    return {"type": "object", "properties": properties,
            "required": list(files) if required is None else required,
            "additionalProperties": False}


def request_body(json_model: type[BaseModel], files: dict[str, bool],
                 texts: dict[str, dict[str, Any]] | None = None,
                 required: list[str] | None = None) -> dict[str, Any]:
    """``openapi_extra`` describing a body accepted as JSON or as multipart form data."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_model.model_json_schema()},
        "multipart/form-data": {"schema": multipart_schema(files, texts, required)},
    }}}
