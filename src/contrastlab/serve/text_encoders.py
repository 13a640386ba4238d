"""Encoders of text and image-text runs for embed, export, index and search: the text side (a
text run's sentence encoder, an image-text run's text tower) and an image-text run's image
tower, with the identity of the embedding space they map into.

* :func:`run_kind`: ``image`` (``contrastlab train``), ``text`` (``train-text``) or
  ``image-text`` (``train-pairs``), from the checkpoint's ``kind`` (read memory-mapped).
* :class:`TextEncoder`: texts -> float32 (N, D) embeddings, L2-normalised unless asked
  otherwise; :class:`TorchTextEncoder` runs a run's PyTorch modules
  (:mod:`contrastlab.serve.text_modules`), :class:`OnnxTextEncoder` an exported text tower.
  Its :class:`TextCard` describes the tokenisation (the tokenizer's JSON or the n-gram
  featuriser's settings travel in it, so an artefact is self-describing) and the space.
* :func:`pair_image_encoder`: an image-text run's image tower as an image
  :class:`~contrastlab.serve.encoders.Encoder` (``projector`` features: the shared space;
  ``backbone``: the tower's features before the projection); :func:`pair_encoders`: both towers
  from one load of the run (what ``contrastlab serve`` serves); :func:`open_image_encoder`: the
  image encoder of any run or artefact.

The HTTP service serves these encoders too (:mod:`contrastlab.serve.text_service`).

**Spaces.** Embeddings are comparable only when one run's encoders made them into one space.
Each run gets a fingerprint (a BLAKE2b hash of its weights, :func:`weights_fingerprint`), and a
space is ``FINGERPRINT/text`` (a text run's sentences), ``FINGERPRINT/shared`` (both towers of an
image-text run after their projections) or ``FINGERPRINT/image-backbone``. The space is written
into the embeddings' and the index's metadata and into exported artefacts, and search refuses a
query whose space differs from the index's (:func:`contrastlab.serve.index.check_space`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.data.ngrams import NgramFeaturizer
from contrastlab.data.tokenizer import TextTokenizer
from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.models.hf_text_encoder import HfTextEncoder
from contrastlab.models.ngram_encoder import NgramEncoder
from contrastlab.models.text_encoder import TextTransformer
from contrastlab.runs.hf_folder import HF_PREFIX
from contrastlab.serve.deps import require
from contrastlab.serve.encoders import (
    METADATA_KEY,
    Encoder,
    FeatureModule,
    ModelCard,
    TorchEncoder,
    onnx_session,
    open_encoder,
)
from contrastlab.serve.text_modules import (
    NGRAM_INPUTS,
    TRANSFORMER_INPUTS,
    NgramTextModule,
    TransformerTextModule,
)

if TYPE_CHECKING:
    from contrastlab.runs.pair_run import LoadedPairRun

RUN_KINDS = ("image", "text", "image-text")
TEXT_CARD_VERSION = 1
TRANSFORMER_INPUT = (
    "input_ids int64 (N, L) and attention_mask int64 (N, L), 1 for real tokens and 0 for "
    "padding, from the tokenizer in this card (its [CLS] ... [SEP], cut to max_length tokens with "
    "the final [SEP] kept, padded with its pad id)")
NGRAM_INPUT = (
    "ids int64 (T,), weights float32 (T,) and offsets int64 (N,): every sentence's distinct "
    "hashed n-gram buckets one after the other (crc32 of the UTF-8 feature string modulo "
    "buckets; features as contrastlab.data.ngrams), their sublinear term frequencies 1 + "
    "log(count), and where each sentence starts")
TEXT_OUTPUT = ("float32 (N, embedding_dim), not normalised; L2-normalise and compare with the "
               "dot product (cosine similarity)")


def run_kind(run: str | Path) -> str:
    """``image``, ``text`` or ``image-text``: which command trained the run in folder ``run``.

    Raises:
        CheckpointError: the folder holds no checkpoint or an unreadable one.
    """
    from contrastlab.runs.checkpoint import load_checkpoint
    from contrastlab.runs.directory import RunDirectory
    from contrastlab.runs.pair_run import PAIR_RUN_KIND
    from contrastlab.runs.text_run import TEXT_RUN_KIND

    path = RunDirectory(run).checkpoint_path
    if not path.is_file():
        raise CheckpointError(f"'{run}' holds no run (no {path}): give the --out folder of "
                              "`contrastlab train`, `train-text` or `train-pairs`")
    try:  # memory-mapped: only the small entries are read
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not mappable: the safe loader says what is wrong
        state = load_checkpoint(path)
    kind = state.get("kind") if isinstance(state, dict) else None
    return {None: "image", TEXT_RUN_KIND: "text", PAIR_RUN_KIND: "image-text"}.get(kind, "image")


def checkpoint_kind_of(kind: str) -> str | None:
    """The checkpoint's ``kind`` field of a run kind (``text-simcse``, ``image-text``; None for
    an image run)."""
    from contrastlab.runs.pair_run import PAIR_RUN_KIND
    from contrastlab.runs.text_run import TEXT_RUN_KIND

    return {"text": TEXT_RUN_KIND, "image-text": PAIR_RUN_KIND}.get(kind)


def weights_fingerprint(module: nn.Module) -> str:
    """A short BLAKE2b hash (16 hex digits) of ``module``'s state dict: names, shapes, dtypes and
    bytes. The same run gives the same fingerprint on every device."""
    digest = hashlib.blake2b(digest_size=8)
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(state[name].shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def read_run_settings(run: str | Path) -> dict[str, Any]:
    """The run's ``config.yaml`` (sections), or {} when it has none."""
    import yaml

    path = Path(run) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class TextCard:
    """What a text encoder takes and gives (JSON-serialisable; the metadata of text artefacts).

    ``tokenizer``: the tokenizers JSON (Transformer); ``ngrams``: ``buckets``, ``char_ngrams``,
    ``word_ngrams`` of the featuriser (bag of n-grams).
    """

    run_kind: str
    method: str
    backbone: str
    features: str
    embedding_dim: int
    space: str
    max_length: int | None = None
    tokenizer: str | None = None
    ngrams: dict[str, Any] | None = None
    format: str = "pytorch"

    @property
    def input_names(self) -> tuple[str, ...]:
        return NGRAM_INPUTS if self.backbone == "ngrams" else TRANSFORMER_INPUTS

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(modality="text", format_version=TEXT_CARD_VERSION,
                    inputs=list(self.input_names),
                    input=NGRAM_INPUT if self.backbone == "ngrams" else TRANSFORMER_INPUT,
                    output=TEXT_OUTPUT)
        return data

    def summary(self) -> dict[str, Any]:
        """The card without the tokenizer and the input/output text, with the checkpoint's
        ``kind`` (what the HTTP service checks an index by): for embeddings' and indexes'
        metadata."""
        data = {k: v for k, v in self.to_json().items()
                if k not in ("tokenizer", "input", "output", "inputs", "format_version")}
        return {**data, "kind": checkpoint_kind_of(self.run_kind)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> TextCard:
        """Rebuild a card from artefact metadata; CheckpointError names ``where`` if it is bad."""
        try:
            version = int(data.get("format_version", 0))
            if version != TEXT_CARD_VERSION:
                raise CheckpointError(f"{where}: text metadata version {version} is not "
                                      f"supported (this contrastlab reads {TEXT_CARD_VERSION}); "
                                      "export the run again")
            ngrams = data.get("ngrams")
            return cls(str(data["run_kind"]), str(data["method"]), str(data["backbone"]),
                       str(data["features"]), int(data["embedding_dim"]), str(data["space"]),
                       None if data.get("max_length") is None else int(data["max_length"]),
                       data.get("tokenizer"), None if ngrams is None else dict(ngrams),
                       str(data.get("format", "onnx")))
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{where}: the contrastlab text metadata is incomplete or "
                                  f"malformed ({error!r}); export the run again") from error


def card_tokenizer(card: TextCard) -> TextTokenizer | NgramFeaturizer:
    """The tokenizer (or n-gram featuriser) a card describes."""
    if card.backbone == "ngrams":
        if card.ngrams is None:
            raise CheckpointError("a bag-of-n-grams text card without its 'ngrams' settings")
        low, high = card.ngrams["char_ngrams"]
        return NgramFeaturizer(int(card.ngrams["buckets"]), (int(low), int(high)),
                               int(card.ngrams["word_ngrams"]))
    if card.tokenizer is None or card.max_length is None:
        raise CheckpointError("a Transformer text card without its tokenizer or max_length")
    return TextTokenizer.from_json(card.tokenizer)


class TextEncoder:
    """Base class: tokenise with the card's tokenizer, then :meth:`forward_features`."""

    card: TextCard
    tokenizer: TextTokenizer | NgramFeaturizer | HfTokenizer

    def inputs(self, texts: Sequence[str]) -> tuple[Tensor, ...]:
        """The model inputs of ``texts`` (CPU tensors, in :attr:`TextCard.input_names` order)."""
        if isinstance(self.tokenizer, NgramFeaturizer):
            bags = self.tokenizer.encode(list(texts))
            return bags.ids, bags.weights, bags.offsets
        assert self.card.max_length is not None
        tokens = self.tokenizer.encode(list(texts), self.card.max_length)
        return tokens.ids, tokens.mask.long()

    def forward_features(self, inputs: tuple[Tensor, ...]) -> np.ndarray:
        """Raw features float32 (N, D) of model inputs."""
        raise NotImplementedError

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256, normalize: bool = True,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Float32 embeddings (N, D) of ``texts`` in their order, ``batch_size`` at a time;
        L2-normalised by default; ``progress(n)`` after each batch."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(texts), self.card.embedding_dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out[start:start + len(chunk)] = self.forward_features(self.inputs(chunk))
            if progress is not None:
                progress(len(chunk))
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


class TorchTextEncoder(TextEncoder):
    """A run's text module (:mod:`contrastlab.serve.text_modules`) in PyTorch."""

    def __init__(self, module: nn.Module, card: TextCard,
                 tokenizer: TextTokenizer | NgramFeaturizer | HfTokenizer,
                 device: torch.device | str = "cpu",
                 run_settings: dict[str, Any] | None = None) -> None:
        self.module = module
        self.card = card
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.run_settings = run_settings or {}

    def forward_features(self, inputs: tuple[Tensor, ...]) -> np.ndarray:
        with torch.inference_mode():
            return self.module(*(x.to(self.device) for x in inputs)).float().cpu().numpy()


class OnnxTextEncoder(TextEncoder):
    """An exported text tower run by ONNX Runtime."""

    def __init__(self, model: bytes, card: TextCard, device: torch.device | str = "cpu",
                 threads: int | None = None) -> None:
        self.session = onnx_session(model, device, threads)
        self.card = card
        self.tokenizer = card_tokenizer(card)

    def forward_features(self, inputs: tuple[Tensor, ...]) -> np.ndarray:
        feed = {name: np.ascontiguousarray(x.numpy()) for name, x in
                zip(self.card.input_names, inputs, strict=True)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


def _ngram_settings(encoder: NgramEncoder) -> dict[str, Any]:
    s = encoder.settings
    return {"buckets": int(s.buckets), "char_ngrams": [int(v) for v in s.char_ngrams],
            "word_ngrams": int(s.word_ngrams)}


def text_encoder_from_run(run: str | Path, device: torch.device | str = "cpu"
                          ) -> TorchTextEncoder:
    """The text encoder of a text run or the text tower of an image-text run.

    Raises:
        CheckpointError: no run there, or an image run's (it has no text encoder).
    """
    kind = run_kind(run)
    settings = read_run_settings(run)
    if kind == "image":
        raise CheckpointError(f"'{run}' is an image run (`contrastlab train`): it has no text "
                              "encoder; give a run of `contrastlab train-text` or `train-pairs`")
    if kind == "text":
        from contrastlab.runs.text_run import load_text_run

        loaded = load_text_run(run, "cpu")
        module: nn.Module
        if isinstance(loaded.encoder, NgramEncoder):
            module, backbone = NgramTextModule(loaded.encoder), "ngrams"
            max_length, tokenizer_json, ngrams = None, None, _ngram_settings(loaded.encoder)
        elif isinstance(loaded.encoder, HfTextEncoder):
            module, backbone = TransformerTextModule(loaded.encoder), hf_card_name(loaded.encoder)
            max_length, tokenizer_json, ngrams = loaded.encoder.max_length, None, None
        else:
            assert isinstance(loaded.tokenizer, TextTokenizer)
            module, backbone = TransformerTextModule(loaded.encoder), "transformer"
            max_length, ngrams = loaded.encoder.max_length, None
            tokenizer_json = loaded.tokenizer.to_json()
        card = TextCard("text", "simcse", backbone, "sentence", loaded.encoder.output_dim,
                        weights_fingerprint(loaded.encoder) + "/text", max_length,
                        tokenizer_json, ngrams)
        return TorchTextEncoder(module.eval().to(device), card, loaded.tokenizer, device,
                                settings)
    text, _ = pair_encoders(run, device, with_image=False)
    return text


def hf_card_name(encoder: HfTextEncoder) -> str:
    """The card's ``backbone`` of a Hugging Face text tower: ``hf:<model type>``."""
    return f"{HF_PREFIX}{getattr(encoder.model.config, 'model_type', 'model')}"


def _pair_text_encoder(pair: LoadedPairRun, fingerprint: str, settings: dict[str, Any],
                       device: torch.device | str) -> TorchTextEncoder:
    tower = pair.method.tower_b.encoder
    assert isinstance(tower, TextTransformer | HfTextEncoder)
    module = TransformerTextModule(tower, pair.method.projection_b)
    if isinstance(tower, HfTextEncoder):  # its tokenizer is the model folder's (no JSON here)
        backbone, tokenizer_json = hf_card_name(tower), None
    else:
        assert isinstance(pair.tokenizer, TextTokenizer)
        backbone, tokenizer_json = "transformer", pair.tokenizer.to_json()
    card = TextCard("image-text", pair.method.name, backbone, "shared", module.output_dim,
                    fingerprint + "/shared", pair.max_length, tokenizer_json)
    return TorchTextEncoder(module.eval().to(device), card, pair.tokenizer, device, settings)


def _pair_image_encoder(pair: LoadedPairRun, fingerprint: str, settings: dict[str, Any],
                        features: str, device: torch.device | str) -> TorchEncoder:
    space = fingerprint + ("/shared" if features == "projector" else "/image-backbone")
    transform = pair.transform
    module = FeatureModule(pair.method, features).eval()
    dim = (pair.method.projection_a.out_features if features == "projector"
           else pair.method.backbone.output_dim)
    train = settings.get("train", {})
    card = ModelCard(
        method=pair.method.name, backbone=str(train.get("backbone", "image tower")),
        features=features, image_size=int(transform.output_size),
        channels=int(transform.channels),
        mean=tuple(float(v) for v in torch.as_tensor(transform.mean).flatten()),
        std=tuple(float(v) for v in torch.as_tensor(transform.std).flatten()),
        embedding_dim=int(dim),
        model_meta={"run_kind": "image-text", "kind": checkpoint_kind_of("image-text"),
                    "tower": "image", "space": space},
    )
    flat = {**train, **settings.get("method", {})}
    return TorchEncoder(module.to(device), card, device, flat)


def pair_encoders(run: str | Path, device: torch.device | str = "cpu",
                  with_image: bool = True) -> tuple[TorchTextEncoder, TorchEncoder | None]:
    """Both towers of an image-text run in its shared space, from one load of the run: the text
    encoder and (``with_image``) the image encoder with ``projector`` features."""
    from contrastlab.runs.pair_run import load_pair_run

    pair = load_pair_run(run, "cpu")
    settings = read_run_settings(run)
    fingerprint = weights_fingerprint(pair.method)
    text = _pair_text_encoder(pair, fingerprint, settings, device)
    image = (_pair_image_encoder(pair, fingerprint, settings, "projector", device)
             if with_image else None)
    return text, image


def pair_image_encoder(run: str | Path, features: str = "projector",
                       device: torch.device | str = "cpu") -> TorchEncoder:
    """The image tower of an image-text run as an image encoder: ``projector`` features are the
    shared space (CLIP's normalised ``W_i f(x)``), ``backbone`` the tower's own features."""
    from contrastlab.runs.pair_run import load_pair_run
    from contrastlab.serve.encoders import check_features

    check_features(features)
    pair = load_pair_run(run, "cpu")
    return _pair_image_encoder(pair, weights_fingerprint(pair.method), read_run_settings(run),
                               features, device)


def open_image_encoder(run: str | Path | None, artefact: str | Path | None,
                       features: str | None, device: torch.device | str = "cpu",
                       kind: str | None = None, threads: int | None = None) -> Encoder:
    """The image encoder of a run or artefact: an image-text run's image tower
    (:func:`pair_image_encoder`, ``projector`` features by default), else
    :func:`~contrastlab.serve.encoders.open_encoder`. ``kind``: the run's
    :func:`run_kind` when already known."""
    if run is not None and artefact is None and (kind or run_kind(run)) == "image-text":
        return pair_image_encoder(run, features or "projector", device)
    return open_encoder(run, artefact, features, device, threads)


# ---------------------------------------------------------------------- artefacts

def artefact_card_json(path: str | Path) -> dict[str, Any] | None:
    """The contrastlab metadata of an ONNX artefact (None for other formats or without it)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return None
    onnx = require("onnx", "reading an ONNX artefact")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - onnx raises DecodeError and others
        raise CheckpointError(f"'{path}' is not a readable ONNX model ({error})") from error
    props = {p.key: p.value for p in model.metadata_props}
    try:
        return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else None
    except ValueError as error:
        raise CheckpointError(f"'{path}': its contrastlab metadata is not JSON") from error


def is_text_artefact(path: str | Path) -> bool:
    """Whether ``path`` is a text tower exported by ``contrastlab export``."""
    card = artefact_card_json(path)
    return card is not None and card.get("modality") == "text"


def text_encoder_from_artefact(path: str | Path, device: torch.device | str = "cpu",
                               threads: int | None = None) -> OnnxTextEncoder:
    """Load a text tower exported as ONNX (the tokenizer comes from its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"artefact '{path}' does not exist or is not a file")
    data = artefact_card_json(path)
    if data is None or data.get("modality") != "text":
        raise CheckpointError(f"'{path}' is not a text tower exported by `contrastlab export "
                              "--format onnx` of a text or image-text run")
    card = TextCard.from_json(data, str(path))
    return OnnxTextEncoder(path.read_bytes(), card, device, threads)


__all__ = ["RUN_KINDS", "OnnxTextEncoder", "TextCard", "TextEncoder", "TorchTextEncoder",
           "artefact_card_json", "card_tokenizer", "is_text_artefact", "open_image_encoder",
           "pair_encoders", "pair_image_encoder",
           "read_run_settings", "run_kind", "text_encoder_from_artefact",
           "text_encoder_from_run", "weights_fingerprint"]
