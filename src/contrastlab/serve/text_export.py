"""ONNX export of text towers (text runs, and the text tower of image-text runs), and the parity
check of an exported tower (text or image) against the PyTorch run it came from.

A text artefact is one ``.onnx`` file (opset 17, the TorchScript-based exporter as for images)
whose ``metadata_props["contrastlab"]`` holds its :class:`~contrastlab.serve.text_encoders.
TextCard`: the tokenizer's JSON (Transformer) or the n-gram featuriser's settings, ``max_length``,
the embedding dimension and the run's space, so the file alone embeds text
(:func:`~contrastlab.serve.text_encoders.text_encoder_from_artefact`). Inputs:

* Transformer: ``input_ids``, ``attention_mask`` int64 (N, L), batch and length dynamic
  (L <= max_length); output ``embeddings`` (N, D).
* bag of n-grams: ``ids`` int64 (T,), ``weights`` float32 (T,), ``offsets`` int64 (N,)
  (:class:`~contrastlab.serve.text_modules.NgramTextModule`); output ``embeddings`` (N, D). The
  table is a weight of the graph: ONNX files hold at most 2 GB (protobuf's limit), so an
  encoder with buckets x dim x 4 bytes above that is refused.

Parity (as :mod:`contrastlab.serve.parity` for images): the mean and minimum cosine similarity
of the PyTorch and the exported embeddings of the same inputs, >= 0.999 to pass (float32). Text
runs have no held-out split, so the sentences are a seeded sample of the run's training text;
an image tower is checked on a seeded sample of the run's images. There is no kNN figure (no
labels).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from contrastlab.atomic import write_atomic
from contrastlab.errors import ConfigError
from contrastlab.runs.hf_folder import HF_PREFIX
from contrastlab.serve.deps import require
from contrastlab.serve.embed import embed_images
from contrastlab.serve.encoders import METADATA_KEY, Encoder, torchscript_notices_hidden
from contrastlab.serve.export import ONNX_OPSET
from contrastlab.serve.parity import COSINE_THRESHOLD, ParityReport, cosine_agreement
from contrastlab.serve.progress import Phase, quiet_phase
from contrastlab.serve.text_encoders import TextCard, TextEncoder, TorchTextEncoder
from contrastlab.serve.text_modules import NgramTextModule

#: protobuf's limit on one serialised ONNX model
ONNX_MAX_BYTES = 2 ** 31 - 1
#: sentences of the example batch the exporter traces (two lengths, so padding is exercised)
EXAMPLE_TEXTS = ("a short example sentence for tracing", "another one")


def _weights_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def text_onnx_bytes(encoder: TorchTextEncoder) -> bytes:
    """The encoder's text module as an ONNX model (dynamic batch and length), no metadata.

    Raises:
        ConfigError: the weights do not fit one ONNX file (2 GB).
    """
    if encoder.card.backbone.startswith(HF_PREFIX):
        raise ConfigError(
            f"the text tower is a Hugging Face model ({encoder.card.backbone}); contrastlab "
            "does not export those to ONNX (its tokenizer is not one the artefact's card can "
            "carry): embed, search and serve the run itself (PyTorch)")
    require("onnx", "--format onnx")
    module = encoder.module.to("cpu").eval()
    if isinstance(module, NgramTextModule):  # the encoder's EmbeddingBag does not export
        module = NgramTextModule(module.encoder, traceable=True).eval()
    size = _weights_bytes(module)
    if size > ONNX_MAX_BYTES - 2 ** 24:
        raise ConfigError(
            f"the text encoder's weights take {size / 2 ** 30:.2f} GiB, more than one ONNX file "
            "can hold (2 GB, protobuf's limit): train with fewer --buckets or a smaller --dim "
            "to export it")
    names = encoder.card.input_names
    example = encoder.inputs(list(EXAMPLE_TEXTS))
    if encoder.card.backbone == "ngrams":
        axes = {"ids": {0: "ngrams"}, "weights": {0: "ngrams"}, "offsets": {0: "batch"}}
    else:
        axes = {name: {0: "batch", 1: "tokens"} for name in names}
    buffer = io.BytesIO()
    with torchscript_notices_hidden(), torch.no_grad(), warnings.catch_warnings():
        # the encoder's check that L <= max_length is traced as a constant: the tokenizer of
        # the card never gives more tokens
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, example, buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(names), output_names=["embeddings"],
                          dynamic_axes={**axes, "embeddings": {0: "batch"}},
                          do_constant_folding=True)
    encoder.module.to(encoder.device)
    return buffer.getvalue()


def export_text_onnx(encoder: TorchTextEncoder, out: str | Path,
                     phase: Phase = quiet_phase) -> TextCard:
    """Write the text tower of ``encoder`` (loaded from a run) as an ONNX artefact to ``out``,
    atomically; returns the artefact's card."""
    onnx = require("onnx", "--format onnx")
    card = dataclasses.replace(encoder.card, format="onnx")
    with phase("exporting the text encoder to ONNX", None):
        model = onnx.load_from_string(text_onnx_bytes(encoder))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: card.dumps()})
    model.producer_name = "contrastlab"
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    write_atomic(Path(out), lambda tmp: tmp.write_bytes(data), "exported text encoder")
    return card


def _sample_rows(count: int, limit: int, seed: int) -> torch.Tensor:
    if count <= limit:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:limit].sort().values


def text_parity(reference: TextEncoder, exported: TextEncoder, texts: Sequence[str],
                sample_size: int = 512, seed: int = 0, batch_size: int = 64,
                phase: Phase = quiet_phase) -> ParityReport:
    """Cosine agreement of two text encoders on a seeded sample of ``texts`` (module doc)."""
    if not texts:
        raise ConfigError("the parity check needs at least one sentence")
    chosen = [texts[i] for i in _sample_rows(len(texts), sample_size, seed).tolist()]
    with phase("parity check (PyTorch and export)", 2 * len(chosen)) as advance:
        ours = reference.embed_texts(chosen, batch_size, normalize=False, progress=advance)
        theirs = exported.embed_texts(chosen, batch_size, normalize=False, progress=advance)
    cosines = cosine_agreement(ours, theirs)
    return ParityReport("fp32", len(chosen), float(cosines.mean()), float(cosines.min()),
                        COSINE_THRESHOLD["fp32"])


def image_parity(reference: Encoder, exported: Encoder, images: torch.Tensor,
                 precision: str = "fp32", sample_size: int = 512, seed: int = 0,
                 phase: Phase = quiet_phase) -> ParityReport:
    """Cosine agreement of two image encoders on a seeded sample of uint8 ``images``."""
    chosen = images[_sample_rows(images.shape[0], sample_size, seed)]
    with phase("parity check (PyTorch and export)", 2 * len(chosen)) as advance:
        ours = embed_images(reference, chosen, 128, False, advance)
        theirs = embed_images(exported, chosen, 128, False, advance)
    cosines = cosine_agreement(ours, theirs)
    return ParityReport(precision, int(chosen.shape[0]), float(cosines.mean()),
                        float(np.min(cosines)), COSINE_THRESHOLD[precision])


__all__ = ["EXAMPLE_TEXTS", "ONNX_MAX_BYTES", "export_text_onnx", "image_parity",
           "text_onnx_bytes", "text_parity"]
