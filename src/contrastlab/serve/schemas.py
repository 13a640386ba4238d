"""Request and response bodies of the HTTP service (pydantic models, strict types).

JSON requests carry images as base64 strings (optionally as ``data:image/...;base64,`` URLs);
multipart requests carry them as file fields of the same names.
"""

from __future__ import annotations

from typing import Any

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


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    count: int
    dim: int
    normalized: bool = True


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
    model: dict[str, Any]
    input: dict[str, Any]
    embedding_dim: int
    index: dict[str, Any] | None
    batching: dict[str, Any]
    decoding: dict[str, Any]
    limits: dict[str, Any]


class HealthResponse(BaseModel):
    status: str


class ErrorResponse(BaseModel):
    error: str = Field(description="a short machine-readable code")
    detail: Any = Field(description="what was wrong, for a person")


def multipart_schema(files: dict[str, bool], texts: dict[str, dict[str, Any]] | None = None
                     ) -> dict[str, Any]:
    """OpenAPI schema of a multipart body: ``files`` maps field name -> repeatable."""
    properties: dict[str, Any] = {}
    for name, repeatable in files.items():
        binary = {"type": "string", "format": "binary"}
        properties[name] = {"type": "array", "items": binary} if repeatable else binary
    properties.update(texts or {})
    return {"type": "object", "properties": properties, "required": list(files),
            "additionalProperties": False}


def request_body(json_model: type[BaseModel], files: dict[str, bool],
                 texts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``openapi_extra`` describing a body accepted as JSON or as multipart form data."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_model.model_json_schema()},
        "multipart/form-data": {"schema": multipart_schema(files, texts)},
    }}}
