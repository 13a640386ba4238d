"""Every route and every error of the HTTP service, in process (FastAPI TestClient)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from contrastlab.serve.app import Service, ServiceLimits, create_app  # noqa: E402
from contrastlab.serve.images import decode_image  # noqa: E402
from contrastlab.serve.index import build_index  # noqa: E402
from tests.serve.serve_helpers import encode_png, png_bomb  # noqa: E402

KEY = "s3cret-key"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digit_png(splits, i: int) -> bytes:
    return encode_png(splits.test.images[i, 0].numpy())


@pytest.fixture(scope="module")
def index(run_encoder, digits_splits):
    train = digits_splits.train
    vectors = run_encoder.embed(train.images)
    return build_index(vectors, train.ids, "flat", train.labels.numpy(),
                       meta=run_encoder.card.to_json())


@pytest.fixture(scope="module")
def client(run_encoder, index) -> Iterator[TestClient]:
    limits = ServiceLimits(max_body_bytes=250_000, max_pixels=256 * 256, max_images=8)
    with TestClient(create_app(Service(run_encoder, index, limits))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keyed(run_encoder) -> Iterator[TestClient]:
    with TestClient(create_app(Service(run_encoder), api_key=KEY)) as test_client:
        yield test_client


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"} and "Traceback" not in response.text
    if code is not None:
        assert body["error"] == code, body
    return body


# ---------------------------------------------------------------------- routes

def test_healthz_and_info(client, run_encoder) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["embedding_dim"] == 64 and info["input"]["image_size"] == 8
    assert info["input"]["channels"] == 1 and info["input"]["mean"] == list(run_encoder.card.mean)
    assert info["model"]["backbone"] == "convnet-small" and info["model"]["features"] == "backbone"
    assert info["index"] == {"kind": "flat", "size": 1437, "dim": 64}
    assert info["limits"]["max_images"] == 8


def test_embed_multipart_and_json_match_the_encoder(client, run_encoder, digits_splits) -> None:
    blobs = [digit_png(digits_splits, i) for i in range(3)]
    expected = run_encoder.embed(np.stack([decode_image(b, 1, 8) for b in blobs]))
    multipart = client.post("/v1/embed", files=[("images", (f"{i}.png", b, "image/png"))
                                                for i, b in enumerate(blobs)])
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert body["count"] == 3 and body["dim"] == 64 and body["normalized"] is True
    np.testing.assert_allclose(body["embeddings"], expected, atol=1e-6)
    as_json = client.post("/v1/embed", json={"images": [b64(b) for b in blobs]})
    np.testing.assert_allclose(as_json.json()["embeddings"], expected, atol=1e-6)
    data_url = client.post("/v1/embed", json={"images": ["data:image/png;base64," + b64(blobs[0])]})
    np.testing.assert_allclose(data_url.json()["embeddings"], expected[:1], atol=1e-6)


def test_similarity_is_the_cosine_of_the_embeddings(client, run_encoder, digits_splits) -> None:
    a, b = digit_png(digits_splits, 0), digit_png(digits_splits, 1)
    ea, eb = run_encoder.embed(np.stack([decode_image(a, 1, 8), decode_image(b, 1, 8)]))
    expected = float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb)))
    multipart = client.post("/v1/similarity", files={"image_a": ("a.png", a),
                                                     "image_b": ("b.png", b)})
    assert multipart.status_code == 200 and multipart.json()["cosine"] == pytest.approx(expected,
                                                                                         abs=1e-6)
    same = client.post("/v1/similarity", json={"image_a": b64(a), "image_b": b64(a)})
    assert same.json()["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_search_returns_the_nearest_training_images(client, run_encoder, digits_splits,
                                                    index) -> None:
    query = digit_png(digits_splits, 5)
    expected = index.search(run_encoder.embed(decode_image(query, 1, 8)[None]), 4)[0]
    response = client.post("/v1/search", json={"image": b64(query), "k": 4})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [h["id"] for h in hits] == [h.id for h in expected] and len(hits) == 4
    assert hits[0]["id"].startswith("digits:") and "label" in hits[0]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
    multipart = client.post("/v1/search", files={"image": ("q.png", query)}, data={"k": "4"})
    assert [h["id"] for h in multipart.json()["hits"]] == [h.id for h in expected]
    default_k = client.post("/v1/search", files={"image": ("q.png", query)})
    assert len(default_k.json()["hits"]) == 10


def test_search_without_an_index_is_404(keyed, png) -> None:
    response = keyed.post("/v1/search", json={"image": b64(png())}, headers={"X-API-Key": KEY})
    assert_error(response, 404, "no_index")


def test_openapi_schema_lists_every_route_and_both_body_types(client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/info", "/v1/embed", "/v1/similarity", "/v1/search"} <= \
        set(schema["paths"])
    content = schema["paths"]["/v1/similarity"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert set(content["multipart/form-data"]["schema"]["properties"]) == {"image_a", "image_b"}


# ---------------------------------------------------------------------- errors

def test_not_an_image_is_400(client, png) -> None:
    body = assert_error(client.post("/v1/embed", files=[("images", ("a.png", png())),
                                                        ("images", ("b.txt", b"hello"))]),
                        400, "not_an_image")
    assert body["detail"].startswith("images[1]:")
    assert_error(client.post("/v1/similarity", json={"image_a": b64(b"nope"),
                                                     "image_b": b64(png())}), 400, "not_an_image")


def test_image_over_the_pixel_limit_is_413(client, png) -> None:
    big = encode_png(np.zeros((300, 300), dtype=np.uint8))  # 90,000 > 65,536 pixels
    assert_error(client.post("/v1/embed", files={"images": ("big.png", big)}), 413,
                 "image_too_large")
    bomb = png_bomb(60_000, 60_000)
    assert_error(client.post("/v1/similarity", json={"image_a": b64(bomb), "image_b": b64(bomb)}),
                 413, "image_too_large")


def test_body_over_the_size_limit_is_413(client) -> None:
    payload = b"x" * 300_000
    assert_error(client.post("/v1/embed", files={"images": ("a.png", payload)}), 413,
                 "body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(30):
            yield b"y" * 10_000

    assert_error(client.post("/v1/embed", content=chunks(),
                             headers={"content-type": "application/json"}), 413, "body_too_large")


@pytest.mark.parametrize("payload", [
    {"imagez": ["aGk="]},                      # unknown field, missing field
    {"images": []},                            # empty list
    {"images": "aGk="},                        # string instead of list
    {"images": [123]},                         # wrong item type
    {"images": ["aGk="], "extra": 1},          # extra field
    [1, 2, 3],                                 # not an object
])
def test_wrong_json_fields_and_types_are_422(client, payload) -> None:
    assert_error(client.post("/v1/embed", json=payload), 422, "invalid_request")


def test_other_422s(client, png) -> None:
    for bad_json in (b"{not json", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"):
        assert_error(client.post("/v1/embed", content=bad_json,
                                 headers={"content-type": "application/json"}), 422,
                     "invalid_json")
    assert_error(client.post("/v1/embed", json={"images": ["%%%not base64%%%"]}), 422,
                 "invalid_base64")
    assert_error(client.post("/v1/embed", json={"images": [b64(png())] * 9}), 422,
                 "too_many_images")
    assert_error(client.post("/v1/search", json={"image": b64(png()), "k": 0}), 422)
    assert_error(client.post("/v1/search", json={"image": b64(png()), "k": "3"}), 422)
    assert_error(client.post("/v1/search", files={"image": ("q.png", png())},
                             data={"k": "ten"}), 422)
    assert_error(client.post("/v1/similarity", files={"image_a": ("a.png", png())}), 422)
    assert_error(client.post("/v1/similarity", files={"image_a": ("a", png()),
                                                      "image_b": ("b", png()),
                                                      "image_c": ("c", png())}), 422)
    assert_error(client.post("/v1/similarity", data={"image_a": "text"},
                             files={"image_b": ("b", png())}), 422)
    assert_error(client.post("/v1/similarity", files=[("image_a", ("a", png())),
                                                      ("image_a", ("a", png())),
                                                      ("image_b", ("b", png()))]), 422)


def test_other_content_types_are_415(client) -> None:
    assert_error(client.post("/v1/embed", content=b"raw", headers={"content-type": "image/png"}),
                 415, "unsupported_media_type")
    assert_error(client.post("/v1/embed", content=b"raw"), 415)


def test_unknown_routes_and_methods(client) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/embed"), 405, "method_not_allowed")
    assert_error(client.get("/../../etc/passwd"), 404)


def test_encoder_failure_is_a_generic_500_without_traceback(run_encoder, png,
                                                            monkeypatch) -> None:
    service = Service(run_encoder)
    monkeypatch.setattr(service, "_run_batch", lambda images: 1 / 0)
    service.batcher.run_batch = service._run_batch
    with TestClient(create_app(service), raise_server_exceptions=False) as failing:
        body = assert_error(failing.post("/v1/embed", files={"images": ("a.png", png())}),
                            500, "internal_error")
    assert body["detail"] == "internal server error" and "ZeroDivision" not in json.dumps(body)


# ---------------------------------------------------------------------- API key

@pytest.mark.parametrize("method,path", [("get", "/v1/info"), ("post", "/v1/embed"),
                                         ("post", "/v1/similarity"), ("post", "/v1/search"),
                                         ("get", "/openapi.json"), ("get", "/docs"),
                                         ("get", "/nowhere")])
def test_api_key_is_required_on_every_route_but_healthz(keyed, method, path) -> None:
    assert_error(getattr(keyed, method)(path), 401, "unauthorized")
    assert_error(getattr(keyed, method)(path, headers={"X-API-Key": "wrong"}), 401)
    assert_error(getattr(keyed, method)(path, headers={"Authorization": "Bearer wrong"}), 401)


def test_api_key_accepted_as_header_or_bearer(keyed, png) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/v1/info", headers={"X-API-Key": KEY}).status_code == 200
    response = keyed.post("/v1/similarity", headers={"Authorization": f"Bearer {KEY}"},
                          files={"image_a": ("a", png(1)), "image_b": ("b", png(2))})
    assert response.status_code == 200
