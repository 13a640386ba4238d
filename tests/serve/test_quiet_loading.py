"""Loading an encoder for the service and answering a request prints no warning.

Issue 20 reported a PyTorch UserWarning when `serve` loads; it could not be reproduced here (see
docs/serving.md), so this guards every loading path the service has: a run's checkpoint and the
three artefact formats, each then answering a request (the first forward pass runs in the
batcher's thread).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")
pytest.importorskip("safetensors", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from contrastlab.serve.app import Service, create_app  # noqa: E402
from contrastlab.serve.encoders import open_encoder  # noqa: E402
from contrastlab.serve.export import export_encoder  # noqa: E402


@pytest.mark.parametrize("fmt", [None, "onnx", "torchscript", "safetensors"])
def test_loading_and_serving_warn_about_nothing(trained_run: Path, run_encoder, tmp_path: Path,
                                                png, fmt: str | None) -> None:
    artefact = None
    if fmt is not None:
        artefact = tmp_path / f"encoder.{fmt}"
        export_encoder(run_encoder, fmt, artefact)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = open_encoder(None if artefact else trained_run, artefact, None, "cpu")
        with TestClient(create_app(Service(encoder))) as client:
            response = client.post("/v1/similarity", files={"image_a": ("a.png", png(1)),
                                                            "image_b": ("b.png", png(2))})
    assert response.status_code == 200, response.text
    assert [f"{w.category.__name__}: {w.message} ({w.filename})" for w in caught] == []
