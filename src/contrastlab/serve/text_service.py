"""What ``contrastlab serve`` serves: images, texts or both, built on the encoders of embed,
index, search and export (:mod:`contrastlab.serve.text_encoders`).

* A text run (``contrastlab train-text``) or an exported text tower (``text-encoder.onnx``,
  ``text-tower.onnx``) embeds texts: a :class:`~contrastlab.serve.text_encoders.TextEncoder`.
* An image-text run (``contrastlab train-pairs``) embeds images and texts into its one shared
  space (:func:`~contrastlab.serve.text_encoders.pair_encoders`), so text-image cosines mean
  something: its image tower is served as an :class:`~contrastlab.serve.encoders.Encoder` (the
  image path of the service: decoding limits, micro-batching), its text tower as a text encoder.
* Any other run, or an exported image encoder, is an image encoder
  (:func:`~contrastlab.serve.encoders.open_encoder`).

An index given at start-up is checked as ``contrastlab search`` checks it
(:func:`~contrastlab.serve.index.check_space`): embeddings of the same run's same space, or a
bare array of the same dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contrastlab import __version__
from contrastlab.errors import ConfigError
from contrastlab.serve.encoders import Encoder, open_encoder
from contrastlab.serve.index import VectorIndex, check_compatible, check_space
from contrastlab.serve.text_encoders import (
    TextEncoder,
    checkpoint_kind_of,
    is_text_artefact,
    pair_encoders,
    run_kind,
    text_encoder_from_artefact,
    text_encoder_from_run,
)

#: What a served model takes, in the order ``/v1/info`` lists them.
INPUT_KINDS = ("images", "texts")


@dataclass
class ServedModel:
    """What the service embeds: images (an encoder), texts (a text encoder), or both in one
    space (an image-text run)."""

    images: Encoder | None
    texts: TextEncoder | None

    @property
    def inputs(self) -> list[str]:
        """``["images"]``, ``["texts"]`` or ``["images", "texts"]``."""
        return [kind for kind, part in zip(INPUT_KINDS, (self.images, self.texts), strict=True)
                if part is not None]

    @property
    def embedding_dim(self) -> int:
        if self.images is not None:
            return self.images.card.embedding_dim
        assert self.texts is not None
        return self.texts.card.embedding_dim

    def model_json(self) -> dict[str, Any]:
        """The ``model`` section of ``/v1/info``: the image encoder's card (with the run kind of
        an image-text run), or the text encoder's card."""
        if self.images is not None:
            card = self.images.card
            out = {"method": card.method, "backbone": card.backbone, "features": card.features,
                   "format": card.format, "quantization": card.quantization}
            if self.texts is not None:
                out["kind"] = checkpoint_kind_of(self.texts.card.run_kind)
                out["text_backbone"] = self.texts.card.backbone
        else:
            assert self.texts is not None
            text = self.texts.card
            out = {"kind": checkpoint_kind_of(text.run_kind), "method": text.method,
                   "backbone": text.backbone, "format": text.format, "space": text.space}
        out["contrastlab"] = __version__
        return out


def open_served_model(run: str | Path | None = None, artefact: str | Path | None = None,
                      features: str | None = None, device: torch.device | str = "cpu",
                      threads: int | None = None) -> ServedModel:
    """The model behind ``contrastlab serve``: a text run's or an exported text tower's text
    encoder, an image-text run's two towers, or the image encoder of any other run or
    artefact.

    Raises:
        ConfigError: ``features`` for a text or image-text run or a text artefact (they are
            served in their embedding space only), or not exactly one of ``run`` and
            ``artefact``.
        CheckpointError: a run or artefact that cannot be loaded.
    """
    if (run is None) == (artefact is None):
        raise ConfigError("give exactly one of --run (a run directory) and --artefact (an "
                          "exported encoder)")
    if run is not None:
        kind = run_kind(run)
    else:
        kind = "text" if is_text_artefact(artefact) else "image"  # type: ignore[arg-type]
    if kind == "image":
        return ServedModel(open_encoder(run, artefact, features, device, threads), None)
    if features is not None:
        what = f"a {kind} run" if run is not None else "a text tower"
        raise ConfigError(f"--features applies to image runs; '{run or artefact}' is {what}, "
                          "served in its embedding space: leave --features out")
    if artefact is not None:
        return ServedModel(None, text_encoder_from_artefact(artefact, device, threads))
    if kind == "text":
        return ServedModel(None, text_encoder_from_run(run, device))  # type: ignore[arg-type]
    texts, images = pair_encoders(run, device)  # type: ignore[arg-type]
    return ServedModel(images, texts)


def check_index(index: VectorIndex, model: ServedModel, where: str) -> None:
    """Raise ConfigError unless the served model can search ``index``, as ``contrastlab search``
    decides: the image encoder's card (:func:`~contrastlab.serve.index.check_compatible`; for an
    image-text run, the shared space), or the text encoder's space
    (:func:`~contrastlab.serve.index.check_space`). An image-text run may search an index of its
    images or of its captions: both are in its one space."""
    if model.images is not None:
        check_compatible(index, model.images.card.to_json(), where)
        return
    assert model.texts is not None
    check_space(index, model.texts.card.space, model.texts.card.embedding_dim, where,
                "the served model")


__all__ = ["INPUT_KINDS", "ServedModel", "check_index", "open_served_model"]
