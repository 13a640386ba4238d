"""Bounded property-based runs against the service: no body, field or path gives a 5xx.

The routes and their field names come from the served OpenAPI schema; bodies are random JSON
(valid field names with values of any type, random keys), random multipart forms (file and text
fields, images and junk) and random bytes under random content types.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from contrastlab.serve.app import Service, ServiceLimits, create_app  # noqa: E402
from contrastlab.serve.index import build_index  # noqa: E402
from tests.serve.serve_helpers import encode_png, png_bomb  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

IMAGES = [encode_png(np.full((8, 8), 3, dtype=np.uint8)),
          encode_png(np.zeros((3, 40, 3), dtype=np.uint8)), png_bomb(50_000, 50_000),
          b"", b"\x89PNG\r\n\x1a\n", b"GIF89a\x00"]


@pytest.fixture(scope="module")
def client(run_encoder) -> Iterator[TestClient]:
    index = build_index(np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32),
                        meta=run_encoder.card.to_json())
    service = Service(run_encoder, index, ServiceLimits(max_body_bytes=100_000, max_images=4))
    with TestClient(create_app(service), raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def openapi(client) -> dict:
    return client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def routes(openapi) -> dict[str, list[str]]:
    """POST path -> every field name its OpenAPI request body declares (JSON and multipart)."""
    out = {}
    for path, methods in openapi["paths"].items():
        if "post" in methods:
            content = methods["post"]["requestBody"]["content"]
            names = set()
            for media in content.values():
                names |= set(media["schema"].get("properties", {}))
            out[path] = sorted(names)
    assert set(out) == {"/v1/embed", "/v1/similarity", "/v1/search"}
    return out


def from_json_schema(schema: dict) -> st.SearchStrategy:
    """Objects shaped like a request's JSON schema: its properties (required ones always),
    strings as base64 images (good and bad), arrays of them, integers around the limits."""
    def value(prop: dict) -> st.SearchStrategy:
        kind = prop.get("type")
        if kind == "array":
            return st.lists(image_b64, min_size=0, max_size=6)
        if kind == "integer":
            return st.integers(-3, 1003)
        return image_b64

    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries({name: value(p) for name, p in props.items() if name in required},
                                 optional={name: value(p) for name, p in props.items()
                                           if name not in required})


def check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "detail"} and "Traceback" not in response.text


image_b64 = st.sampled_from(IMAGES).map(lambda b: base64.b64encode(b).decode())
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=True), st.text(max_size=20), image_b64)
json_value = st.recursive(json_leaf, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12)


@FUZZ
@given(data=st.data())
def test_json_bodies_from_the_openapi_schema(client, openapi, data) -> None:
    path = data.draw(st.sampled_from(["/v1/embed", "/v1/similarity", "/v1/search"]))
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    check(client.post(path, json=data.draw(from_json_schema(schema["schema"]))))


@FUZZ
@given(data=st.data())
def test_random_json_bodies(client, routes, data) -> None:
    path = data.draw(st.sampled_from(sorted(routes)))
    names = st.sampled_from(routes[path]) | st.text(max_size=8)
    body = data.draw(st.one_of(json_value, st.dictionaries(names, json_value, max_size=4),
                               st.dictionaries(st.sampled_from(routes[path]),
                                               image_b64 | st.lists(image_b64, max_size=6),
                                               max_size=3)))
    check(client.post(path, json=body))


@FUZZ
@given(data=st.data())
def test_random_multipart_bodies(client, routes, data) -> None:
    path = data.draw(st.sampled_from(sorted(routes)))
    names = st.sampled_from(routes[path]) | st.text(string.ascii_letters + "_[]", max_size=8)
    files = data.draw(st.lists(st.tuples(names, st.sampled_from(IMAGES) | st.binary(max_size=64)),
                               max_size=6))
    texts = data.draw(st.dictionaries(names, st.text(max_size=10), max_size=2))
    multipart = [(name, ("f", content)) for name, content in files]
    if not multipart:  # httpx sends a urlencoded body without files; force multipart
        multipart = [("unused", ("f", b""))]
    check(client.post(path, files=multipart, data=texts))


@FUZZ
@given(path=st.sampled_from(["/v1/embed", "/v1/similarity", "/v1/search", "/v1/info",
                             "/healthz", "/", "/v1/", "/docs"])
       | st.text(string.ascii_letters + string.digits + "-._~/%", max_size=12).map("/{}".format),
       body=st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "multipart/form-data",
                                     "multipart/form-data; boundary=xyz", "text/plain",
                                     "application/octet-stream", "", "image/png"]),
       method=st.sampled_from(["get", "post", "put", "delete"]))
def test_random_bytes_paths_and_methods(client, path, body, content_type, method) -> None:
    headers = {"content-type": content_type} if content_type else {}
    if method in ("get", "delete"):
        response = client.request(method.upper(), path, headers=headers)
    else:
        response = client.request(method.upper(), path, content=body, headers=headers)
    check(response)
