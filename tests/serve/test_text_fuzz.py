"""Bounded property-based runs against the service of an image-text run (it takes images and
texts): no JSON or multipart body of its fields, with texts of any content (empty, white space,
lone surrogates, over the length limit), gives a 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from contrastlab.serve.app import Service, ServiceLimits, create_app  # noqa: E402
from contrastlab.serve.index import build_index  # noqa: E402
from contrastlab.serve.text_service import open_served_model  # noqa: E402
from tests.text.pair_data import image_bytes  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
FIELDS = {"/v1/embed": ["images", "texts"],
          "/v1/similarity": ["image_a", "image_b", "text_a", "text_b"],
          "/v1/search": ["image", "text", "k"]}
IMAGES = [image_bytes((200, 10, 10)), b"", b"not an image"]

texts = st.one_of(st.text(max_size=12), st.just(""), st.just(" \n"), st.just("x" * 25),
                  st.just("bad \ud800"), st.sampled_from(["a red square", "a blue square"]))
image_b64 = st.sampled_from(IMAGES).map(lambda b: base64.b64encode(b).decode())
values = st.one_of(texts, image_b64, st.lists(texts | image_b64, max_size=5), st.integers(-2, 12),
                   st.none(), st.booleans())


@pytest.fixture(scope="module")
def client(pair_run_dir: Path) -> Iterator[TestClient]:
    model = open_served_model(pair_run_dir)
    index = build_index(np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32))
    service = Service(model.images, index, ServiceLimits(max_texts=3, max_text_chars=20,
                                                         max_images=3), texts=model.texts)
    with TestClient(create_app(service), raise_server_exceptions=True) as test_client:
        yield test_client


def check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "detail"}


@FUZZ
@given(data=st.data())
def test_json_bodies_of_the_routes_fields(client, data) -> None:
    path = data.draw(st.sampled_from(sorted(FIELDS)))
    body = data.draw(st.dictionaries(st.sampled_from(FIELDS[path]), values, max_size=4))
    raw = json.dumps(body).encode()  # ASCII: a lone surrogate travels as \ud800
    check(client.post(path, content=raw, headers={"content-type": "application/json"}))


@FUZZ
@given(data=st.data())
def test_multipart_bodies_of_the_routes_fields(client, data) -> None:
    path = data.draw(st.sampled_from(sorted(FIELDS)))
    names = st.sampled_from(FIELDS[path])
    files = data.draw(st.lists(st.tuples(names, st.sampled_from(IMAGES)), max_size=3))
    fields = data.draw(st.lists(st.tuples(names, texts.filter(lambda t: "\ud800" not in t)),
                                max_size=4))
    form: dict[str, list[str]] = {}
    for name, value in fields:
        form.setdefault(name, []).append(value)
    multipart = [(name, ("f", content)) for name, content in files] or [("images", ("f", b""))]
    check(client.post(path, files=multipart, data=form))
