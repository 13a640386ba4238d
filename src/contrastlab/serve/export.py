"""Exported encoders: self-describing ONNX, TorchScript and safetensors artefacts.

Every artefact carries the encoder's :class:`~contrastlab.serve.encoders.ModelCard` as JSON
(input size, channels, mean/std, embedding dimension, backbone, method, features and the
model metadata needed to rebuild it):

* ONNX: ``metadata_props["contrastlab"]``; input ``images`` float32 (N, C, H, W) with a dynamic
  batch dimension, output ``embeddings`` (N, D). Runs in ONNX Runtime.
* TorchScript: the traced module with an extra file ``contrastlab.json``
  (``torch.jit.load(path, _extra_files={"contrastlab.json": ""})``).
* safetensors: the whole method's state dict (backbone and heads), metadata key ``contrastlab``;
  loading rebuilds the architecture from the card, so no code is unpickled.

``int8=True`` (ONNX only) quantises with ONNX Runtime. ``static`` (the default) inserts
QuantizeLinear/DequantizeLinear pairs (QDQ format) with int8 per-channel weights and uint8
activations whose ranges are calibrated on a sample of training images, after ONNX Runtime's
pre-processing (shape inference, batch-norm folding). Weights use 7 of their 8 bits
(``reduce_range``): x86 CPUs without VNNI (AVX2, AVX512 before Cascade Lake) multiply uint8 by
int8 through a 16-bit sum that saturates with full-range weights; on such a CPU the CIFAR-10
recipe's ConvNet gave a mean cosine of 0.964 (min 0.65) to its float model with 8-bit weights
and 0.9999 (min 0.9996) with 7-bit ones, and an artefact may be served on another CPU than
the one that exported it. ``dynamic`` quantises weights only and
computes activation ranges at run time (ConvInteger/MatMulInteger); it needs no calibration but
is usually slower for convolutional networks. See docs/benchmarks.md for measured figures.

The artefact is written atomically (:mod:`contrastlab.atomic`): a full disk gives a
:class:`~contrastlab.errors.WriteError` naming the file and the cause, leaves a previous artefact
at that path intact and no temporary file behind. TorchScript archives are serialised in memory
first, because ``torch.jit.save`` aborts the whole process when the disk fills up under it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from contrastlab.atomic import write_atomic
from contrastlab.errors import ConfigError, unknown_name
from contrastlab.serve.deps import require
from contrastlab.serve.encoders import (
    METADATA_KEY,
    FeatureModule,
    ModelCard,
    TorchEncoder,
    torchscript_notices_hidden,
)
from contrastlab.serve.progress import Phase, quiet_phase

EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
INT8_MODES = ("static", "dynamic")
ONNX_OPSET = 17

_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}


def default_artefact_path(run: str | Path, fmt: str, int8: bool = False,
                          features: str = "backbone") -> Path:
    """``RUN/export/encoder[-projector][.int8].<ext>``."""
    name = "encoder" + ("-projector" if features == "projector" else "")
    name += ".int8" if int8 else ""
    return Path(run) / "export" / (name + _SUFFIXES[fmt])


def _module_for_export(encoder: TorchEncoder) -> FeatureModule:
    module = encoder.module
    if not isinstance(module, FeatureModule):
        raise ConfigError("only an encoder loaded from a run can be exported")
    return module.to("cpu").eval()


def _example_input(card: ModelCard, batch: int = 2) -> torch.Tensor:
    return torch.zeros(batch, card.channels, card.image_size, card.image_size)


def onnx_bytes(module: torch.nn.Module, card: ModelCard) -> bytes:
    """The module as an ONNX model (opset 17, dynamic batch), without metadata."""
    require("onnx", "--format onnx")
    buffer = io.BytesIO()
    with torchscript_notices_hidden():
        torch.onnx.export(
            module, (_example_input(card),), buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=["images"], output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _write_onnx_with_card(model_bytes_or_path: bytes | Path, card: ModelCard, out: Path) -> None:
    onnx = require("onnx", "--format onnx")
    model = (onnx.load_from_string(model_bytes_or_path)
             if isinstance(model_bytes_or_path, bytes) else onnx.load(str(model_bytes_or_path)))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: card.dumps()})
    model.producer_name = "contrastlab"
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


class _CalibrationReader:
    """Feeds preprocessed calibration images to ONNX Runtime's static quantiser."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 32) -> None:
        self.inputs = inputs
        self.batch_size = batch_size
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.inputs), self.batch_size):
            yield {"images": self.inputs[start:start + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iterator is None:
            self._iterator = self._batches()
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = None


def quantize_onnx(fp32_path: Path, out: Path, mode: str = "static",
                  calibration: np.ndarray | None = None) -> None:
    """Quantise the ONNX model at ``fp32_path`` to int8 into ``out`` (see the module doc).

    ``calibration``: preprocessed float32 inputs (N, C, H, W) for ``static`` mode.
    """
    require("onnxruntime", "--int8")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in INT8_MODES:
        raise unknown_name("int8 mode", mode, INT8_MODES)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=True)
            return
        if calibration is None or len(calibration) == 0:
            raise ConfigError("static int8 quantisation needs calibration images")
        quantize_static(
            str(prepared), str(out), _CalibrationReader(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
        )


def export_onnx(encoder: TorchEncoder, out: Path, int8: bool = False, int8_mode: str = "static",
                calibration: np.ndarray | None = None, phase: Phase = quiet_phase) -> ModelCard:
    """Write an ONNX artefact (int8 when asked) to ``out`` and return its card.

    The intermediate models of quantisation go to a temporary folder beside ``out`` (same file
    system), removed afterwards."""
    module = _module_for_export(encoder)
    card = dataclasses.replace(encoder.card, format="onnx",
                               quantization=f"int8-{int8_mode}" if int8 else None)
    with phase("exporting the model to ONNX", None):
        model = onnx_bytes(module, card)
    if not int8:
        _write_onnx_with_card(model, card, out)
        return card
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".contrastlab-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32.write_bytes(model)
        quantized = Path(tmp) / "int8.onnx"
        images = "" if calibration is None else f" (calibrating on {len(calibration):,} images)"
        with phase(f"quantising to int8, {int8_mode}{images}", None):
            quantize_onnx(fp32, quantized, int8_mode, calibration)
        _write_onnx_with_card(quantized, card, out)
    return card


def export_torchscript(encoder: TorchEncoder, out: Path) -> ModelCard:
    """Write a traced, frozen TorchScript artefact with ``contrastlab.json`` inside."""
    module = _module_for_export(encoder)
    card = dataclasses.replace(encoder.card, format="torchscript", quantization=None)
    with torchscript_notices_hidden(), torch.no_grad():
        traced = torch.jit.trace(module, _example_input(card), check_trace=False)
        frozen = torch.jit.freeze(traced.eval())
        buffer = io.BytesIO()  # in memory: torch.jit.save aborts the process on a full disk
        torch.jit.save(frozen, buffer, _extra_files={METADATA_KEY + ".json": card.dumps()})
    out.write_bytes(buffer.getvalue())
    return card


def export_safetensors(encoder: TorchEncoder, out: Path) -> ModelCard:
    """Write the method's weights as safetensors with the card in the metadata."""
    require("safetensors", "--format safetensors")
    from safetensors.torch import save_file

    module = _module_for_export(encoder)
    card = dataclasses.replace(encoder.card, format="safetensors", quantization=None)
    state = {name: tensor.detach().to("cpu").contiguous().clone()
             for name, tensor in module.method.state_dict().items()}
    save_file(state, str(out), metadata={METADATA_KEY: card.dumps()})
    return card


def export_encoder(encoder: TorchEncoder, fmt: str, out: str | Path, int8: bool = False,
                   int8_mode: str = "static", calibration: np.ndarray | None = None,
                   phase: Phase = quiet_phase) -> ModelCard:
    """Export ``encoder`` (loaded from a run) as ``fmt`` to ``out``; returns the artefact's card.

    Raises:
        ConfigError: unknown format, or ``int8`` with a format other than ONNX.
        WriteError: the disk is full or the folder is not writable (a previous artefact at
            ``out`` is intact, no temporary file is left).
    """
    if fmt not in EXPORT_FORMATS:
        raise unknown_name("export format", fmt, EXPORT_FORMATS)
    if int8 and fmt != "onnx":
        raise ConfigError(f"--int8 applies to --format onnx only (ONNX Runtime quantisation), "
                          f"not to {fmt}")
    cards: list[ModelCard] = []

    def write(tmp: Path) -> None:
        if fmt == "onnx":
            cards.append(export_onnx(encoder, tmp, int8, int8_mode, calibration, phase))
        elif fmt == "torchscript":
            cards.append(export_torchscript(encoder, tmp))
        else:
            cards.append(export_safetensors(encoder, tmp))

    write_atomic(out, write, "exported encoder")
    return cards[0]


def card_summary(card: ModelCard) -> str:
    """One line describing an artefact's card, for the command line."""
    return json.dumps({k: v for k, v in card.to_json().items()
                       if k not in ("model_meta", "input", "output")})
