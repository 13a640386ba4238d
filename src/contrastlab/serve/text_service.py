"""Text and image-text runs behind the HTTP service: what each embeds, and opening a run.

* A text run (``contrastlab train-text``, :mod:`contrastlab.runs.text_run`) embeds texts: its
  sentence embeddings, L2-normalised here (the service's embeddings always are).
* An image-text run (``contrastlab train-pairs``, :mod:`contrastlab.runs.pair_run`) embeds
  images and texts into one space (both L2-normalised by the run), so text-image cosines mean
  something: its image tower is served as an :class:`~contrastlab.serve.encoders.Encoder` (the
  image path of the service: decoding limits, micro-batching), its text tower as a
  :class:`TextEmbedder`.
* Any other run, or an exported artefact, is an image encoder
  (:func:`~contrastlab.serve.encoders.open_encoder`).

The run's kind is read from its checkpoint's ``kind`` field, memory-mapped so the weights are not
read twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contrastlab import __version__
from contrastlab.errors import ConfigError
from contrastlab.runs.pair_run import PAIR_RUN_KIND, LoadedPairRun, load_pair_run
from contrastlab.runs.text_run import TEXT_RUN_KIND, LoadedTextRun, load_text_run
from contrastlab.serve.encoders import Encoder, ModelCard, _as_uint8_tensor, open_encoder

#: What a served model takes, in the order ``/v1/info`` lists them.
INPUT_KINDS = ("images", "texts")


def l2_normalized(features: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to unit L2 norm (as :meth:`Encoder.embed` does)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return np.ascontiguousarray(features / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class TextCard:
    """What a served text tower is: its run's kind and method, the tower, its output size and
    how many tokens of a text it reads (None: all; the n-gram encoder)."""

    kind: str
    method: str
    backbone: str
    embedding_dim: int
    max_tokens: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TextEmbedder:
    """Base class: texts -> float32 (N, D) L2-normalised embeddings."""

    card: TextCard

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class TextRunEmbedder(TextEmbedder):
    """A text run's sentence embeddings (:meth:`LoadedTextRun.embed`), L2-normalised."""

    def __init__(self, run: LoadedTextRun, card: TextCard) -> None:
        self.run = run
        self.card = card

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalized(self.run.embed(list(texts)).numpy())


class PairTextEmbedder(TextEmbedder):
    """An image-text run's text tower in the shared space (:meth:`LoadedPairRun.embed_texts`)."""

    def __init__(self, run: LoadedPairRun, card: TextCard) -> None:
        self.run = run
        self.card = card

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.ascontiguousarray(self.run.embed_texts(list(texts)).numpy(), dtype=np.float32)


class PairImageEncoder(Encoder):
    """An image-text run's image tower in the shared space (:meth:`LoadedPairRun.embed_images`:
    the run's evaluation transform, the tower, the projection, L2-normalised)."""

    def __init__(self, run: LoadedPairRun, card: ModelCard) -> None:
        self.run = run
        self.card = card
        self.device = run.device

    def embed(self, images: np.ndarray | Tensor, normalize: bool = True) -> np.ndarray:
        """Shared-space embeddings of uint8 images (N, C, H, W); always L2-normalised (the
        space is defined on the sphere), whatever ``normalize`` says."""
        out = self.run.embed_images(_as_uint8_tensor(images))
        return np.ascontiguousarray(out.numpy(), dtype=np.float32)


@dataclass
class ServedModel:
    """What the service embeds: images (an encoder), texts (a text tower), or both in one
    space (an image-text run)."""

    images: Encoder | None
    texts: TextEmbedder | None

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
        an image-text run), or the text tower's card."""
        if self.images is not None:
            card = self.images.card
            out = {"method": card.method, "backbone": card.backbone, "features": card.features,
                   "format": card.format, "quantization": card.quantization}
            if self.texts is not None:
                out["kind"] = self.texts.card.kind
                out["text_backbone"] = self.texts.card.backbone
        else:
            assert self.texts is not None
            out = {"kind": self.texts.card.kind, "method": self.texts.card.method,
                   "backbone": self.texts.card.backbone, "format": "pytorch"}
        out["contrastlab"] = __version__
        return out


def checkpoint_kind(run: str | Path) -> tuple[str | None, dict[str, Any]]:
    """The ``kind`` and ``settings`` of the checkpoint of run folder ``run`` (None and {} when
    it has none or it cannot be read this way: the image loader then says what is wrong)."""
    from contrastlab.runs.directory import RunDirectory

    path = RunDirectory(run).checkpoint_path
    if not path.is_file():
        return None, {}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the full load that follows names the problem
        return None, {}
    if not isinstance(state, dict):
        return None, {}
    kind = state.get("kind")
    settings = state.get("settings")
    return (kind if isinstance(kind, str) else None,
            settings if isinstance(settings, dict) else {})


def _text_run(run: str | Path, settings: dict[str, Any], device: torch.device) -> ServedModel:
    loaded = load_text_run(run, device)
    backbone = str(settings.get("train", {}).get("text_backbone", "transformer"))
    max_tokens = getattr(loaded.encoder, "max_length", None)
    card = TextCard(TEXT_RUN_KIND, "simcse", backbone, int(loaded.encoder.output_dim),
                    None if backbone == "ngrams" or max_tokens is None else int(max_tokens))
    return ServedModel(None, TextRunEmbedder(loaded, card))


def _pair_run(run: str | Path, settings: dict[str, Any], device: torch.device) -> ServedModel:
    loaded = load_pair_run(run, device)
    train = settings.get("train", {})
    method, backbone = str(train.get("method", "clip")), str(train.get("backbone", ""))
    transform = loaded.transform
    dim = int(loaded.method.projection_b.out_features)
    image_card = ModelCard(
        method=method, backbone=backbone, features="projector",
        image_size=int(transform.output_size), channels=int(transform.channels),
        mean=tuple(float(v) for v in transform.mean), std=tuple(float(v) for v in transform.std),
        embedding_dim=int(loaded.method.projection_a.out_features),
        model_meta={"kind": PAIR_RUN_KIND})
    text_card = TextCard(PAIR_RUN_KIND, method, "transformer", dim, int(loaded.max_length))
    return ServedModel(PairImageEncoder(loaded, image_card), PairTextEmbedder(loaded, text_card))


def open_served_model(run: str | Path | None = None, artefact: str | Path | None = None,
                      features: str | None = None, device: torch.device | str = "cpu",
                      threads: int | None = None) -> ServedModel:
    """The model behind ``contrastlab serve``: a text run's text tower, an image-text run's
    two towers, or the image encoder of any other run or artefact.

    Raises:
        ConfigError: ``features`` for a text or image-text run (they are served in their
            embedding space only), or not exactly one of ``run`` and ``artefact``.
        CheckpointError: a run that cannot be loaded.
    """
    if run is not None and artefact is None:
        kind, settings = checkpoint_kind(run)
        if kind in (TEXT_RUN_KIND, PAIR_RUN_KIND):
            if features is not None:
                raise ConfigError(f"--features applies to image runs; '{run}' is a "
                                  f"{'text' if kind == TEXT_RUN_KIND else 'image-text'} run, "
                                  "served in its embedding space: leave --features out")
            opener = _text_run if kind == TEXT_RUN_KIND else _pair_run
            return opener(run, settings, torch.device(device))
    return ServedModel(open_encoder(run, artefact, features, device, threads), None)


def check_index(index: Any, model: ServedModel, where: str) -> None:
    """Raise ConfigError when the served text or image-text model cannot search ``index`` (a
    :class:`~contrastlab.serve.index.VectorIndex`): another dimension, or an index whose
    embeddings' metadata names another kind of run. An image-text run may search an index of
    its images or of its captions: both are in its one space."""
    dim = model.embedding_dim
    if dim != index.dim:
        raise ConfigError(f"{where}: the served run gives {dim}-dimensional embeddings but the "
                          f"index holds {index.dim}-dimensional vectors; index embeddings of "
                          "the run you serve")
    assert model.texts is not None
    ours, theirs = model.texts.card.kind, index.meta.get("kind")
    if theirs is not None and theirs != ours:
        raise ConfigError(f"{where}: the index was built from a '{theirs}' run's embeddings but "
                          f"the served run is a '{ours}' run; index embeddings of the run you "
                          "serve")


__all__ = ["INPUT_KINDS", "PairImageEncoder", "PairTextEmbedder", "ServedModel", "TextCard",
           "TextEmbedder", "TextRunEmbedder", "check_index", "checkpoint_kind", "l2_normalized",
           "open_served_model"]
