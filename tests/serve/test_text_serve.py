"""The HTTP service of a text run and of an image-text run: embeddings equal the runs' own,
similarities equal cosines computed directly, search finds the indexed item, and every text
limit and every input the served run does not take is refused with a clear message."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from contrastlab.errors import ConfigError  # noqa: E402
from contrastlab.runs.pair_run import load_pair_run  # noqa: E402
from contrastlab.runs.text_run import load_text_run  # noqa: E402
from contrastlab.serve.app import BatchSettings, Service, ServiceLimits, create_app  # noqa: E402
from contrastlab.serve.images import decode_image  # noqa: E402
from contrastlab.serve.index import build_index  # noqa: E402
from contrastlab.serve.text_service import check_index, open_served_model  # noqa: E402
from tests.serve.conftest import SENTENCES  # noqa: E402
from tests.text.pair_data import COLOURS, image_bytes  # noqa: E402

LIMITS = ServiceLimits(max_texts=4, max_text_chars=30, max_images=4)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (the service's embeddings are normalised)."""
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def multipart(fields: list[tuple[str, str]]) -> dict:
    """Keyword arguments of a multipart/form-data request of text fields only (httpx sends
    ``data`` without files as a urlencoded form)."""
    boundary = "contrastlab-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
             f"{value}\r\n" for name, value in fields]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return {"content": body,
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


def refused(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    return body["detail"]


# ---------------------------------------------------------------------- a text run

@pytest.fixture(scope="module")
def text_run(text_run_dir: Path):
    return load_text_run(text_run_dir)


@pytest.fixture(scope="module")
def text_client(text_run_dir: Path, text_run) -> Iterator[TestClient]:
    model = open_served_model(text_run_dir)
    assert model.images is None and model.inputs == ["texts"]
    index = build_index(text_run.embed(SENTENCES).numpy(), SENTENCES, "flat",
                        meta={"kind": "text-simcse", "space": model.texts.card.space})
    check_index(index, model, "test")
    service = Service(index=index, limits=LIMITS, texts=model.texts)
    with TestClient(create_app(service)) as client:
        yield client


def test_text_run_info(text_client, text_run) -> None:
    info = text_client.get("/v1/info").json()
    assert info["inputs"] == ["texts"] and info["embedding_dim"] == 16
    assert info["model"]["kind"] == "text-simcse" and info["model"]["backbone"] == "transformer"
    assert info["input"] == {"text": {"max_tokens": text_run.encoder.max_length,
                                      "max_chars": 30}}
    assert info["decoding"] is None and info["index"] == {"kind": "flat", "size": 8, "dim": 16}
    assert info["limits"]["max_texts"] == 4 and info["limits"]["max_text_chars"] == 30


def test_text_embeddings_are_the_runs(text_client, text_run) -> None:
    texts = SENTENCES[:3]
    expected = unit(text_run.embed(texts).numpy())
    body = text_client.post("/v1/embed", json={"texts": texts}).json()
    assert body["input"] == "texts" and body["count"] == 3 and body["dim"] == 16
    assert "text_embeddings" not in body
    np.testing.assert_array_equal(np.array(body["embeddings"], dtype=np.float32), expected)
    form = text_client.post("/v1/embed", **multipart([("texts", t) for t in texts]))
    assert form.status_code == 200, form.text
    np.testing.assert_array_equal(np.array(form.json()["embeddings"], dtype=np.float32),
                                  expected)


def test_text_similarity_is_the_cosine(text_client, text_run) -> None:
    a, b = SENTENCES[0], SENTENCES[4]
    vectors = text_run.embed([a, b]).numpy()
    got = text_client.post("/v1/similarity", json={"text_a": a, "text_b": b}).json()["cosine"]
    assert got == pytest.approx(cosine(*vectors), abs=1e-6)
    same = text_client.post("/v1/similarity",
                            **multipart([("text_a", a), ("text_b", a)])).json()
    assert same["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_text_search_finds_the_indexed_sentence(text_client, text_run) -> None:
    for sentence in SENTENCES:
        hits = text_client.post("/v1/search", json={"text": sentence, "k": 3}).json()["hits"]
        assert hits[0]["id"] == sentence and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    vectors = text_run.embed(SENTENCES).numpy()
    body = text_client.post("/v1/search",
                            **multipart([("text", "a dog in a park"), ("k", "8")])).json()
    query = text_run.embed(["a dog in a park"]).numpy()[0]
    direct = {s: cosine(query, v) for s, v in zip(SENTENCES, vectors, strict=True)}
    assert body["k"] == 8 and [h["id"] for h in body["hits"]] == \
        sorted(SENTENCES, key=direct.get, reverse=True)
    for hit in body["hits"]:
        assert hit["score"] == pytest.approx(direct[hit["id"]], abs=1e-5)


def test_text_limits_name_the_limit_and_the_item(text_client) -> None:
    post = text_client.post
    detail = refused(post("/v1/embed", json={"texts": ["a"] * 5}), 422, "too_many_texts")
    assert "5 texts" in detail and "at most 4" in detail and "--max-texts" in detail
    detail = refused(post("/v1/embed", **multipart([("texts", "a")] * 5)), 422,
                     "too_many_texts")
    assert "at most 4" in detail
    detail = refused(post("/v1/embed", json={"texts": ["ok", "x" * 31]}), 413, "text_too_long")
    assert detail.startswith("texts[1]: 31 characters; at most 30") and "--max-text-chars" \
        in detail
    assert post("/v1/embed", json={"texts": ["x" * 30]}).status_code == 200  # at the limit
    detail = refused(post("/v1/similarity", json={"text_a": "ok", "text_b": "é" * 31}), 413,
                     "text_too_long")
    assert detail.startswith("text_b: 31 characters")  # characters, not bytes
    detail = refused(post("/v1/embed", json={"texts": ["ok", "fine", ""]}), 422, "empty_text")
    assert detail.startswith("texts[2] is empty")
    assert refused(post("/v1/search", json={"text": " \t\n"}), 422, "empty_text") \
        .startswith("text is empty")
    assert refused(post("/v1/embed", **multipart([("texts", "a"), ("texts", "")])), 422,
                   "empty_text").startswith("texts[1]")
    detail = refused(post("/v1/embed", json={"texts": ["a", 7]}), 422, "invalid_request")
    assert detail.startswith("texts[1]: ")
    for bad in ({"texts": []}, {"texts": "one string"}, {"texts": [None]},
                {"text_a": "a", "text_b": ["b"]}, {"texts": ["a"], "extra": 1}):
        path = "/v1/similarity" if "text_a" in bad else "/v1/embed"
        refused(post(path, json=bad), 422, "invalid_request")
    lone = b'{"texts": ["fine", "bad \\ud800 surrogate"]}'
    detail = refused(post("/v1/embed", content=lone, headers={"content-type":
                                                                 "application/json"}),
                     422, "invalid_text")
    assert detail.startswith("texts[1]: not valid Unicode")
    assert refused(post("/v1/embed", json={}), 422, "invalid_request") == \
        "texts: missing; give at least one"
    assert refused(post("/v1/similarity", json={"text_a": "a"}), 422, "invalid_request") == \
        "text_b: missing; give a text"
    refused(post("/v1/embed", files=[("texts", ("t.txt", b"a file"))]), 422, "invalid_request")


def test_images_sent_to_a_text_run_are_refused(text_client, png) -> None:
    post = text_client.post
    for path, body in (("/v1/embed", {"images": [b64(png())]}),
                       ("/v1/embed", {"images": [b64(png())], "texts": ["a"]}),
                       ("/v1/similarity", {"image_a": b64(png()), "text_b": "a"}),
                       ("/v1/search", {"image": b64(png())})):
        detail = refused(post(path, json=body), 422, "unsupported_input")
        assert "serves a text run" in detail and "embeds texts, not images" in detail
    refused(post("/v1/embed", files={"images": ("a.png", png())}), 422, "unsupported_input")


def test_texts_sent_to_an_image_run_are_refused(run_encoder, png) -> None:
    with TestClient(create_app(Service(run_encoder))) as client:
        assert client.get("/v1/info").json()["inputs"] == ["images"]
        for path, body in (("/v1/embed", {"texts": ["a cat"]}),
                           ("/v1/similarity", {"text_a": "a", "image_b": b64(png())})):
            detail = refused(client.post(path, json=body), 422, "unsupported_input")
            assert "embeds images, not texts" in detail
        refused(client.post("/v1/embed", data={"texts": ["a"]},
                            files={"images": ("a.png", png())}), 422, "unsupported_input")
        schema = client.get("/openapi.json").json()["paths"]["/v1/embed"]["post"]
        assert set(schema["requestBody"]["content"]["application/json"]["schema"]
                   ["properties"]) == {"images"}


def test_text_openapi_describes_text_fields(text_client) -> None:
    paths = text_client.get("/openapi.json").json()["paths"]
    for path, fields in (("/v1/embed", {"texts"}), ("/v1/similarity", {"text_a", "text_b"}),
                         ("/v1/search", {"text", "k"})):
        content = paths[path]["post"]["requestBody"]["content"]
        assert set(content["application/json"]["schema"]["properties"]) == fields
        assert set(content["multipart/form-data"]["schema"]["properties"]) == fields


# ---------------------------------------------------------------------- an image-text run

@pytest.fixture(scope="module")
def pair_run(pair_run_dir: Path):
    return load_pair_run(pair_run_dir)


@pytest.fixture(scope="module")
def pair_images() -> dict[str, bytes]:
    return {f"{name}/{shade}": image_bytes(colour, shade) for name, colour in COLOURS.items()
            for shade in range(2)}


def decoded(pair_run, blobs: list[bytes]) -> np.ndarray:
    channels, size = pair_run.transform.channels, pair_run.transform.output_size
    return np.stack([decode_image(blob, channels, size) for blob in blobs])


@pytest.fixture(scope="module")
def pair_client(pair_run_dir: Path, pair_run, pair_images) -> Iterator[TestClient]:
    import torch

    model = open_served_model(pair_run_dir)
    assert model.inputs == ["images", "texts"]
    images = torch.from_numpy(decoded(pair_run, list(pair_images.values())))
    index = build_index(pair_run.embed_images(images).numpy(), list(pair_images), "flat",
                        meta={"kind": "image-text", "space": model.texts.card.space})
    check_index(index, model, "test")
    service = Service(model.images, index, LIMITS, texts=model.texts)
    with TestClient(create_app(service)) as client:
        yield client


def test_pair_run_info(pair_client) -> None:
    info = pair_client.get("/v1/info").json()
    assert info["inputs"] == ["images", "texts"] and info["embedding_dim"] == 8
    assert info["model"]["kind"] == "image-text" and info["model"]["method"] == "clip"
    assert info["input"]["image_size"] == 8 and info["input"]["channels"] == 3
    assert info["input"]["text"]["max_chars"] == 30 and info["decoding"] is not None


def test_pair_embeddings_are_the_runs(pair_client, pair_run, pair_images) -> None:
    import torch

    def same(got, expected) -> None:
        """The run's own embeddings, up to float32 rounding (the service runs the encoders of
        `contrastlab embed`, which normalise in NumPy, not in PyTorch)."""
        np.testing.assert_allclose(np.array(got, dtype=np.float32), expected, rtol=0, atol=1e-6)

    blobs = list(pair_images.values())[:3]
    texts = ["a red square", "a blue square"]
    images = pair_run.embed_images(torch.from_numpy(decoded(pair_run, blobs))).numpy()
    captions = pair_run.embed_texts(texts).numpy()
    body = pair_client.post("/v1/embed", json={"images": [b64(b) for b in blobs]}).json()
    assert body["input"] == "images" and "text_embeddings" not in body
    same(body["embeddings"], images)
    body = pair_client.post("/v1/embed", json={"texts": texts}).json()
    assert body["input"] == "texts" and body["count"] == 2 and body["dim"] == 8
    same(body["embeddings"], captions)
    both = pair_client.post("/v1/embed", data={"texts": texts},
                            files=[("images", (f"{i}.png", b)) for i, b in enumerate(blobs)])
    body = both.json()
    assert both.status_code == 200 and body["count"] == 3 and body["text_count"] == 2
    same(body["embeddings"], images)
    same(body["text_embeddings"], captions)


def test_pair_similarity_in_the_shared_space(pair_client, pair_run, pair_images) -> None:
    import torch

    red, blue = pair_images["red/0"], pair_images["blue/1"]
    images = pair_run.embed_images(torch.from_numpy(decoded(pair_run, [red, blue]))).numpy()
    texts = pair_run.embed_texts(["a red square", "a blue square"]).numpy()
    cases = [({"text_a": "a red square", "image_b": b64(blue)}, cosine(texts[0], images[1])),
             ({"image_a": b64(red), "text_b": "a blue square"}, cosine(images[0], texts[1])),
             ({"image_a": b64(red), "image_b": b64(blue)}, cosine(images[0], images[1])),
             ({"text_a": "a red square", "text_b": "a blue square"}, cosine(*texts))]
    for body, expected in cases:
        got = pair_client.post("/v1/similarity", json=body)
        assert got.json()["cosine"] == pytest.approx(expected, abs=1e-6), body
    multipart = pair_client.post("/v1/similarity", data={"text_a": "a red square"},
                                 files={"image_b": ("b.png", blue)})
    assert multipart.json()["cosine"] == pytest.approx(cases[0][1], abs=1e-6)
    detail = refused(pair_client.post("/v1/similarity", json={
        "image_a": b64(red), "text_a": "a", "text_b": "b"}), 422, "invalid_request")
    assert detail == "image_a, text_a: give one of them, not both"
    assert refused(pair_client.post("/v1/similarity", json={"image_a": b64(red)}), 422,
                   "invalid_request") == "image_b or text_b: missing; give an image or a text"


def test_pair_search_by_image_and_by_text(pair_client, pair_run, pair_images) -> None:
    import torch

    for name, blob in pair_images.items():
        hits = pair_client.post("/v1/search", files={"image": ("q.png", blob)},
                                data={"k": "2"}).json()["hits"]
        assert hits[0]["id"] == name and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    images = pair_run.embed_images(torch.from_numpy(
        decoded(pair_run, list(pair_images.values())))).numpy()
    query = pair_run.embed_texts(["a green square"]).numpy()[0]
    direct = {name: cosine(query, v) for name, v in zip(pair_images, images, strict=True)}
    body = pair_client.post("/v1/search", json={"text": "a green square", "k": 8}).json()
    assert [h["id"] for h in body["hits"]] == sorted(direct, key=direct.get, reverse=True)
    for hit in body["hits"]:
        assert hit["score"] == pytest.approx(direct[hit["id"]], abs=1e-5)
    detail = refused(pair_client.post("/v1/search", json={"k": 3}), 422, "invalid_request")
    assert detail == "image or text: missing; give an image or a text"
    refused(pair_client.post("/v1/search", json={"text": "a", "image": b64(pair_images[
        "red/0"])}), 422, "invalid_request")


def test_pair_text_limits_are_checked_before_images_are_decoded(pair_client,
                                                                pair_images) -> None:
    detail = refused(pair_client.post("/v1/embed", json={
        "images": [b64(b"not an image")], "texts": ["a", ""]}), 422, "empty_text")
    assert detail.startswith("texts[1]")


# ---------------------------------------------------------------------- batching

def test_texts_are_micro_batched_on_the_image_models_thread(pair_run_dir: Path, pair_run,
                                                            pair_images) -> None:
    """Concurrent text requests share forward passes and each gets its own rows; image and
    text batches never run at the same time (one model thread)."""
    model = open_served_model(pair_run_dir)
    service = Service(model.images, batching=BatchSettings(max_batch=16, max_wait_ms=20),
                      texts=model.texts)
    gate, lock = threading.Event(), threading.Lock()
    running, overlap = [0], [0]

    def guarded(function):
        def run(items):
            gate.wait(5)
            with lock:
                running[0] += 1
                overlap[0] = max(overlap[0], running[0])
            try:
                return function(items)
            finally:
                with lock:
                    running[0] -= 1
        return run

    service.text_batcher.run_batch = guarded(service._run_text_batch)
    service.batcher.run_batch = guarded(service._run_batch)
    requests = [[f"a {c} square"] for c in COLOURS] + [["a red square", "two dogs"]]
    blobs = [(f"images[{i}]", b) for i, b in enumerate(list(pair_images.values())[:2])]

    async def main():
        texts = [asyncio.create_task(service.embed_texts(
            [(f"texts[{i}]", t) for i, t in enumerate(r)])) for r in requests]
        images = asyncio.create_task(service.embed_blobs(blobs))
        await asyncio.sleep(0.1)
        gate.set()
        out = await asyncio.gather(*texts), await images
        await service.stop()
        return out

    try:
        text_out, _ = asyncio.run(main())
    finally:
        service.close()
    for request, got in zip(requests, text_out, strict=True):
        np.testing.assert_allclose(got, pair_run.embed_texts(request).numpy(), atol=1e-5)
    stats = service.text_batcher.stats
    assert stats.requests == len(requests) and stats.batches < len(requests)
    assert overlap[0] == 1


# ---------------------------------------------------------------------- the serve command

def test_serve_command_serves_a_text_run_with_its_limits(text_run_dir: Path, text_run,
                                                         tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import contrastlab.serve.server as server
    from contrastlab.cli import app

    index = build_index(text_run.embed(SENTENCES).numpy(), SENTENCES, "flat")
    index.save(tmp_path / "idx")
    started = {}
    monkeypatch.setattr(server, "run_server", lambda application, settings:
                        started.setdefault("app", application))
    result = CliRunner().invoke(app, ["serve", "--run", str(text_run_dir), "--index",
                                      str(tmp_path / "idx"), "--max-texts", "2",
                                      "--max-text-chars", "50", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with TestClient(started["app"]) as client:
        hits = client.post("/v1/search", json={"text": SENTENCES[5]}).json()["hits"]
        assert hits[0]["id"] == SENTENCES[5]
        refused(client.post("/v1/embed", json={"texts": ["a", "b", "c"]}), 422,
                "too_many_texts")
        refused(client.post("/v1/embed", json={"texts": ["x" * 51]}), 413, "text_too_long")
    wrong = build_index(np.ones((3, 5), dtype=np.float32), None, "flat")
    wrong.save(tmp_path / "wrong")
    result = CliRunner().invoke(app, ["serve", "--run", str(text_run_dir), "--index",
                                      str(tmp_path / "wrong"), "--device", "cpu"])
    assert isinstance(result.exception, ConfigError)
    assert "16-dimensional embeddings but the index holds 5-dimensional" in str(result.exception)
    with pytest.raises(ConfigError, match="--features applies to image runs"):
        open_served_model(text_run_dir, features="projector")


def test_an_ngram_text_run_is_served(tmp_path: Path) -> None:
    from tests.serve.conftest import _cli

    (tmp_path / "s.txt").write_text("\n".join(SENTENCES) + "\n")
    _cli("train-text", "--data", str(tmp_path / "s.txt"), "--out", str(tmp_path / "run"),
         "--text-backbone", "ngrams", "--buckets", "256", "--dim", "8", "--batch-size", "4",
         "--device", "cpu", "--log-every", "100")
    model = open_served_model(tmp_path / "run")
    assert model.texts.card.backbone == "ngrams" and model.texts.card.max_length is None
    with TestClient(create_app(Service(texts=model.texts))) as client:
        body = client.post("/v1/embed", json={"texts": SENTENCES[:2]}).json()
        assert client.get("/v1/info").json()["input"]["text"]["max_tokens"] is None
    expected = unit(load_text_run(tmp_path / "run").embed(SENTENCES[:2]).numpy())
    np.testing.assert_array_equal(np.array(body["embeddings"], dtype=np.float32), expected)


def test_the_index_check_at_start_up_is_the_search_commands(text_run_dir: Path, text_run,
                                                            pair_run_dir: Path) -> None:
    """An index of another run's space, of a kind only, or of an image-text run's image
    features before the projection is refused, as `contrastlab search` refuses it."""
    model = open_served_model(text_run_dir)
    vectors = text_run.embed(SENTENCES).numpy()
    other = "0" * 16 + "/text"
    for meta, message in (({"kind": "text-simcse"}, "not embeddings of this run"),
                          ({"kind": "text-simcse", "space": other}, "another run's embeddings")):
        with pytest.raises(ConfigError, match=message):
            check_index(build_index(vectors, SENTENCES, "flat", meta=meta), model, "idx")
    check_index(build_index(vectors, SENTENCES, "flat"), model, "idx")  # a bare array
    pair = open_served_model(pair_run_dir)
    backbone = pair.texts.card.space.replace("/shared", "/image-backbone")
    index = build_index(np.ones((2, 8), dtype=np.float32), None, "flat",
                        meta={"kind": "image-text", "space": backbone})
    with pytest.raises(ConfigError, match="not in the shared space"):
        check_index(index, pair, "idx")


def test_serve_command_serves_an_exported_text_tower(text_run_dir: Path, text_run,
                                                     tmp_path: Path, monkeypatch) -> None:
    """``serve --artefact text.onnx``: the text encoder of `contrastlab embed --artefact`, with
    its tokenizer from the artefact; its embeddings are the run's, and an index of the run's
    embeddings (same space) is accepted."""
    from typer.testing import CliRunner

    import contrastlab.serve.server as server
    from contrastlab.cli import app
    from tests.serve.conftest import _cli

    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    _cli("export", "--run", str(text_run_dir), "--format", "onnx", "--out",
         str(tmp_path / "text.onnx"), "--no-parity")
    model = open_served_model(artefact=tmp_path / "text.onnx")
    index = build_index(text_run.embed(SENTENCES).numpy(), SENTENCES, "flat",
                        meta={"kind": "text-simcse", "space": model.texts.card.space})
    index.save(tmp_path / "idx")
    started = {}
    monkeypatch.setattr(server, "run_server", lambda application, settings:
                        started.setdefault("app", application))
    result = CliRunner().invoke(app, ["serve", "--artefact", str(tmp_path / "text.onnx"),
                                      "--index", str(tmp_path / "idx"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with TestClient(started["app"]) as client:
        info = client.get("/v1/info").json()
        assert info["inputs"] == ["texts"] and info["model"]["format"] == "onnx"
        assert info["model"]["kind"] == "text-simcse"
        body = client.post("/v1/embed", json={"texts": SENTENCES[:3]}).json()
        np.testing.assert_allclose(np.array(body["embeddings"], dtype=np.float32),
                                   unit(text_run.embed(SENTENCES[:3]).numpy()), atol=1e-5)
        hits = client.post("/v1/search", json={"text": SENTENCES[5]}).json()["hits"]
        assert hits[0]["id"] == SENTENCES[5]
        detail = refused(client.post("/v1/embed", json={"images": [b64(b"x")]}), 422,
                         "unsupported_input")
        assert "serves an exported text tower" in detail
    with pytest.raises(ConfigError, match="--features applies to image runs"):
        open_served_model(artefact=tmp_path / "text.onnx", features="backbone")
