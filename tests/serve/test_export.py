"""Exported artefacts: metadata read with each format's own library, and parity with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the serve extra is not installed")
pytest.importorskip("safetensors", reason="the serve extra is not installed")

from contrastlab.errors import CheckpointError, ConfigError  # noqa: E402
from contrastlab.eval.runs import load_run  # noqa: E402
from contrastlab.serve.encoders import encoder_from_artefact, open_encoder  # noqa: E402
from contrastlab.serve.export import default_artefact_path, export_encoder  # noqa: E402
from contrastlab.serve.parity import cosine_agreement, parity_check  # noqa: E402

CARD_KEYS = {"image_size", "channels", "mean", "std", "embedding_dim", "backbone", "method",
             "features", "format", "input", "output", "model_meta", "format_version"}


def _check_card(card: dict, run: Path, fmt: str) -> None:
    meta = load_run(run).meta
    assert CARD_KEYS <= set(card)
    assert card["image_size"] == meta["image_size"] == 8 and card["channels"] == 1
    assert card["mean"] == meta["mean"] and card["std"] == meta["std"]
    assert card["backbone"] == "convnet-small" and card["embedding_dim"] == 64
    assert card["format"] == fmt


@pytest.fixture(scope="module")
def calibration(run_encoder, digits_splits) -> np.ndarray:
    with torch.inference_mode():
        return run_encoder.card.transform(digits_splits.train.images[:128]).numpy()


def test_onnx_fp32_is_self_describing_and_matches(trained_run, run_encoder, digits_splits,
                                                  tmp_path) -> None:
    import onnx
    import onnxruntime as ort

    out = tmp_path / "e.onnx"
    export_encoder(run_encoder, "onnx", out)
    model = onnx.load(str(out))
    card = json.loads({p.key: p.value for p in model.metadata_props}["contrastlab"])
    _check_card(card, trained_run, "onnx")
    assert card["quantization"] is None
    # Run it with ONNX Runtime directly, preprocessing by the card's own numbers.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = digits_splits.test.images[:20].numpy().astype(np.float32) / 255.0
    x = (images - np.array(card["mean"]).reshape(1, -1, 1, 1)) / \
        np.array(card["std"]).reshape(1, -1, 1, 1)
    onnx_out = session.run(None, {"images": x.astype(np.float32)})[0]
    with torch.no_grad():
        torch_out = load_run(trained_run).method.encode(torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-4, atol=1e-5)
    report = parity_check(run_encoder, encoder_from_artefact(out), digits_splits, "fp32",
                          sample_size=100, k=20)
    assert report.mean_cosine >= 0.999 and report.passed
    assert report.knn_drop_points is not None and abs(report.knn_drop_points) < 1e-9


def test_onnx_int8_static_quantisation(run_encoder, digits_splits, calibration,
                                       tmp_path) -> None:
    import onnx

    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_encoder(run_encoder, "onnx", fp32)
    export_encoder(run_encoder, "onnx", int8, int8=True, calibration=calibration)
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # int8 weights
    exported = encoder_from_artefact(int8)
    assert exported.card.quantization == "int8-static"
    report = parity_check(run_encoder, exported, digits_splits, "int8", sample_size=200, k=20)
    assert report.mean_cosine >= 0.99
    assert report.knn_drop_points is not None and report.knn_drop_points <= 0.5
    assert report.passed


def test_onnx_int8_dynamic_quantisation(run_encoder, digits_splits, tmp_path) -> None:
    out = tmp_path / "dyn.onnx"
    export_encoder(run_encoder, "onnx", out, int8=True, int8_mode="dynamic")
    exported = encoder_from_artefact(out)
    images = digits_splits.test.images[:100]
    cosines = cosine_agreement(run_encoder.embed(images), exported.embed(images))
    assert cosines.mean() >= 0.99


def test_static_int8_needs_calibration(run_encoder, tmp_path) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        export_encoder(run_encoder, "onnx", tmp_path / "x.onnx", int8=True)
    assert not (tmp_path / "x.onnx").exists()


def test_torchscript_is_self_describing_and_matches(trained_run, run_encoder, digits_splits,
                                                    tmp_path) -> None:
    out = tmp_path / "e.torchscript.pt"
    export_encoder(run_encoder, "torchscript", out)
    extra = {"contrastlab.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    _check_card(json.loads(extra["contrastlab.json"]), trained_run, "torchscript")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = load_run(trained_run).method.encode(x)
        np.testing.assert_allclose(module(x).numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    images = digits_splits.test.images[:64]
    cosines = cosine_agreement(run_encoder.embed(images), encoder_from_artefact(out).embed(images))
    assert cosines.min() >= 0.999


def test_safetensors_round_trip_is_exact(trained_run, run_encoder, digits_splits,
                                         tmp_path) -> None:
    from safetensors import safe_open

    out = tmp_path / "e.safetensors"
    export_encoder(run_encoder, "safetensors", out)
    state = load_run(trained_run).method.state_dict()
    with safe_open(str(out), framework="pt") as handle:
        _check_card(json.loads(handle.metadata()["contrastlab"]), trained_run, "safetensors")
        assert set(handle.keys()) == set(state)
        for name in state:
            assert torch.equal(handle.get_tensor(name), state[name]), name
    images = digits_splits.test.images[:64]
    assert np.array_equal(run_encoder.embed(images), encoder_from_artefact(out).embed(images))


def test_projector_features_export(trained_run, digits_splits, tmp_path) -> None:
    encoder = open_encoder(run=trained_run, features="projector")
    out = tmp_path / "p.onnx"
    export_encoder(encoder, "onnx", out)
    exported = encoder_from_artefact(out)
    assert exported.card.features == "projector" and exported.card.embedding_dim == 16
    images = digits_splits.test.images[:32]
    assert cosine_agreement(encoder.embed(images), exported.embed(images)).min() >= 0.999
    with pytest.raises(ConfigError, match="gives projector features"):
        open_encoder(artefact=out, features="backbone")


def test_export_errors(run_encoder, trained_run, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown export format 'onxx'"):
        export_encoder(run_encoder, "onxx", tmp_path / "x")
    with pytest.raises(ConfigError, match="--int8 applies to --format onnx only"):
        export_encoder(run_encoder, "safetensors", tmp_path / "x.safetensors", int8=True)
    assert default_artefact_path(trained_run, "onnx", True) == \
        trained_run / "export" / "encoder.int8.onnx"


@pytest.mark.parametrize("name,content,message", [
    ("a.onnx", b"garbage", "not a readable ONNX model"),
    ("a.safetensors", b"garbage", "not a readable safetensors"),
    ("a.bin", b"garbage", "cannot tell the format"),
])
def test_bad_artefacts_raise_checkpoint_error(tmp_path, name, content, message) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        encoder_from_artefact(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        encoder_from_artefact(tmp_path / "missing.onnx")


def test_artefact_without_metadata_is_refused(run_encoder, tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no contrastlab metadata"):
        encoder_from_artefact(tmp_path / "plain.safetensors")


def test_cosine_agreement_matches_the_formula() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    direct = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
              for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(cosine_agreement(a, b), direct, rtol=1e-12)
