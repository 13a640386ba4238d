"""One interface over every form an encoder can take: a run's PyTorch checkpoint, or an
exported ONNX, TorchScript or safetensors artefact.

An :class:`Encoder` maps uint8 images (N, C, H, W) of its input size to float32 embeddings
(N, D), L2-normalised unless asked otherwise. Its :class:`ModelCard` is the preprocessing
configuration that travels with exported artefacts, so an artefact is self-describing: input
size, channels, per-channel mean/std (the input is ``(pixel / 255 - mean[c]) / std[c]``),
embedding dimension, backbone and method, and which features it outputs (``backbone``: the
representation used for evaluation; ``projector``: the projection-head output the loss acts on).
"""

from __future__ import annotations

import contextlib
import json
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.methods import Method, build_method
from contrastlab.runs.inference import as_inference_input
from contrastlab.serve.deps import require
from contrastlab.views import EvalTransform

#: Which output of a method an encoder gives.
FEATURES = ("backbone", "projector")

#: Name of the metadata entry (ONNX metadata_props key, TorchScript extra file, safetensors key).
METADATA_KEY = "contrastlab"

#: Version of the metadata layout written into artefacts.
CARD_VERSION = 1

INPUT_DESCRIPTION = (
    "float32 (N, C, H, W) with H = W = image_size: pixel values / 255, minus mean[c], divided by "
    "std[c]; images of another size are resized (shorter side to image_size, centre crop, "
    "bilinear) before that"
)
OUTPUT_DESCRIPTION = "float32 (N, embedding_dim) features, not normalised; L2-normalise them and "\
    "compare with the dot product (cosine similarity)"


@contextlib.contextmanager
def torchscript_notices_hidden() -> Iterator[None]:
    """Hide PyTorch's deprecation notices of TorchScript (``torch.jit.trace/freeze/save/load is
    deprecated``) and of the TorchScript-based ONNX exporter, which this package uses on purpose
    (docs/serving.md says which formats to prefer); every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is (deprecated|not "
                                r"supported)", category=FutureWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based "
                                "ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning, module=r"torch\.onnx")
        yield


def check_features(features: str) -> str:
    """Return ``features`` or raise ConfigError unless it is one of :data:`FEATURES`."""
    if features not in FEATURES:
        from contrastlab.errors import unknown_name

        raise unknown_name("features", str(features), FEATURES)
    return features


@dataclass(frozen=True)
class ModelCard:
    """The preprocessing configuration and identity of an encoder (JSON-serialisable)."""

    method: str
    backbone: str
    features: str
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedding_dim: int
    format: str = "pytorch"
    quantization: str | None = None
    model_meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The card as plain JSON data, with the input/output contract spelled out."""
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["format_version"] = CARD_VERSION
        data["input"] = INPUT_DESCRIPTION
        data["output"] = OUTPUT_DESCRIPTION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ModelCard:
        """Rebuild a card from artefact metadata; CheckpointError names ``where`` if it is bad."""
        try:
            version = int(data.get("format_version", 0))
            if version != CARD_VERSION:
                raise CheckpointError(
                    f"{where}: metadata format version {version} is not supported (this "
                    f"contrastlab reads version {CARD_VERSION}); export the artefact again"
                )
            return cls(
                method=str(data["method"]), backbone=str(data["backbone"]),
                features=check_features(str(data["features"])),
                image_size=int(data["image_size"]), channels=int(data["channels"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                embedding_dim=int(data["embedding_dim"]), format=str(data["format"]),
                quantization=data.get("quantization"), model_meta=dict(data["model_meta"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(
                f"{where}: the contrastlab metadata is incomplete or malformed ({error!r}); "
                "export the artefact again with `contrastlab export`"
            ) from error

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @property
    def transform(self) -> EvalTransform:
        return EvalTransform(self.image_size, self.channels, self.mean, self.std)


class FeatureModule(nn.Module):
    """``method.encode`` (backbone) or ``method.project`` (projector) as a plain module, for
    tracing and export."""

    def __init__(self, method: Method, features: str) -> None:
        super().__init__()
        self.method = method
        self.features = check_features(features)

    def forward(self, images: Tensor) -> Tensor:
        if self.features == "projector":
            return self.method.project(images)
        return self.method.encode(images)


def rebuild_method(meta: dict[str, Any]) -> Method:
    """A freshly initialised method of the architecture that ``meta`` (a run's model_meta)
    describes, as :func:`contrastlab.eval.runs.load_run` builds it."""
    return build_method(meta["method"], meta["backbone"], meta["in_channels"],
                        backbone_options=meta.get("backbone_options"), **meta["method_kwargs"])


def _as_uint8_tensor(images: np.ndarray | Tensor) -> Tensor:
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # e.g. a view of a Pillow image; torch wants writable memory
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.ndim != 4:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {tensor.dtype} "
                         f"{tuple(tensor.shape)}")
    return tensor


class Encoder:
    """Base class: preprocessing from the card, then :meth:`forward_features` of the backend."""

    card: ModelCard
    device: torch.device = torch.device("cpu")

    def forward_features(self, inputs: Tensor) -> np.ndarray:
        """Raw features float32 (N, D) of preprocessed inputs (N, C, H, W) on ``self.device``."""
        raise NotImplementedError

    def embed(self, images: np.ndarray | Tensor, normalize: bool = True) -> np.ndarray:
        """Float32 embeddings (N, D) of uint8 images (N, C, H, W); L2-normalised by default."""
        tensor = _as_uint8_tensor(images).to(self.device)
        with torch.inference_mode():
            inputs = self.card.transform(tensor)
        features = np.asarray(self.forward_features(inputs), dtype=np.float32)
        if normalize:
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            features = features / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(features, dtype=np.float32)


class TorchEncoder(Encoder):
    """A PyTorch module (a run's method, a safetensors rebuild, or a TorchScript module)."""

    def __init__(self, module: Callable[[Tensor], Tensor], card: ModelCard,
                 device: torch.device | str = "cpu",
                 run_config: dict[str, Any] | None = None) -> None:
        self.module = module
        self.card = card
        self.device = torch.device(device)
        self.run_config = run_config  # the training configuration, for encoders of runs

    def forward_features(self, inputs: Tensor) -> np.ndarray:
        with torch.inference_mode():
            views = as_inference_input(inputs.to(self.device))
            return self.module(views).float().cpu().numpy()


def onnx_session(model: bytes | str, device: torch.device | str = "cpu",
                 threads: int | None = None) -> Any:
    """An ONNX Runtime session of ``model`` (bytes or a path): on CUDA when ``device`` is a CUDA
    device and the CUDA provider is available, else on the CPU; ``threads``: intra-op threads
    (None: ONNX Runtime's choice)."""
    ort = require("onnxruntime", "running an ONNX artefact")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and \
            "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model, sess_options=options, providers=providers)


class OnnxEncoder(Encoder):
    """An ONNX model run by ONNX Runtime (CPU, or CUDA when its provider is available)."""

    def __init__(self, model: bytes | str, card: ModelCard, device: torch.device | str = "cpu",
                 threads: int | None = None) -> None:
        self.session = onnx_session(model, device, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.card = card

    def forward_features(self, inputs: Tensor) -> np.ndarray:
        array = inputs.detach().cpu().numpy().astype(np.float32, copy=False)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(array)})[0]


def _feature_dim(module: Callable[[Tensor], Tensor], card_channels: int, size: int,
                 device: torch.device) -> int:
    with torch.inference_mode():
        probe = torch.zeros(2, card_channels, size, size, device=device)
        return int(module(probe).shape[1])


def encoder_from_run(run: str | Path, features: str = "backbone",
                     device: torch.device | str = "cpu") -> TorchEncoder:
    """The encoder of a run directory (its last checkpoint, loaded weights-only)."""
    from contrastlab.eval.runs import load_run

    check_features(features)
    device = torch.device(device)
    loaded = load_run(run, device)
    module = FeatureModule(loaded.method, features).eval()
    meta = loaded.meta
    dim = _feature_dim(module, meta["in_channels"], meta["image_size"], device)
    card = ModelCard(
        method=meta["method"], backbone=meta["backbone"], features=features,
        image_size=int(meta["image_size"]), channels=int(meta["in_channels"]),
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), embedding_dim=dim,
        model_meta=json.loads(json.dumps(meta)),
    )
    return TorchEncoder(module, card, device, dict(loaded.config))


# ---------------------------------------------------------------------- artefacts

def _onnx_encoder(path: Path, device: torch.device, threads: int | None) -> OnnxEncoder:
    onnx = require("onnx", "reading an ONNX artefact")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises DecodeError and others for a bad file
        raise CheckpointError(f"'{path}' is not a readable ONNX model ({error})") from error
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise CheckpointError(f"'{path}' has no contrastlab metadata; export it with "
                              "`contrastlab export --format onnx`")
    data = json.loads(props[METADATA_KEY])
    if isinstance(data, dict) and data.get("modality") == "text":
        raise CheckpointError(f"'{path}' is a text encoder (exported from a text or image-text "
                              "run): it embeds texts, not images; use it with --text / --texts")
    card = ModelCard.from_json(data, str(path))
    return OnnxEncoder(model.SerializeToString(), card, device, threads)


def _torchscript_encoder(path: Path, device: torch.device) -> TorchEncoder:
    extra = {METADATA_KEY + ".json": ""}
    try:
        with torchscript_notices_hidden():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"'{path}' is not a readable TorchScript archive ({error})") \
            from error
    if not extra[METADATA_KEY + ".json"]:
        raise CheckpointError(f"'{path}' has no contrastlab metadata; export it with "
                              "`contrastlab export --format torchscript`")
    card = ModelCard.from_json(json.loads(extra[METADATA_KEY + ".json"]), str(path))
    return TorchEncoder(module.eval(), card, device)


def _safetensors_encoder(path: Path, device: torch.device) -> TorchEncoder:
    require("safetensors", "reading a safetensors artefact")
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises SafetensorError and OSError
        raise CheckpointError(f"'{path}' is not a readable safetensors file ({error})") from error
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"'{path}' has no contrastlab metadata; export it with "
                              "`contrastlab export --format safetensors`")
    card = ModelCard.from_json(json.loads(metadata[METADATA_KEY]), str(path))
    method = rebuild_method(card.model_meta)
    try:
        method.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"'{path}': the weights do not fit the {card.backbone} "
                              f"{card.method} model its metadata describes ({error})") from error
    module = FeatureModule(method, card.features).to(device).eval()
    return TorchEncoder(module, card, device)


def artefact_format(path: Path) -> str:
    """``onnx``, ``safetensors`` or ``torchscript``, from the file name and its first bytes."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        return "torchscript"
    raise CheckpointError(
        f"cannot tell the format of artefact '{path}': expected an .onnx or .safetensors file or "
        "a TorchScript archive written by `contrastlab export`"
    )


def encoder_from_artefact(path: str | Path, device: torch.device | str = "cpu",
                          threads: int | None = None) -> Encoder:
    """Load an artefact written by ``contrastlab export`` (format from its name and content);
    ``threads``: ONNX Runtime intra-op threads (default: its own choice)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"artefact '{path}' does not exist or is not a file")
    device = torch.device(device)
    kind = artefact_format(path)
    if kind == "onnx":
        return _onnx_encoder(path, device, threads)
    if kind == "safetensors":
        return _safetensors_encoder(path, device)
    return _torchscript_encoder(path, device)


def open_encoder(run: str | Path | None = None, artefact: str | Path | None = None,
                 features: str | None = None,
                 device: torch.device | str = "cpu", threads: int | None = None) -> Encoder:
    """The encoder of exactly one of ``run`` and ``artefact``.

    ``features`` defaults to ``backbone`` for a run; an artefact has the features it was
    exported with, and asking for the other ones is an error.
    """
    if (run is None) == (artefact is None):
        raise ConfigError("give exactly one of --run (a run directory) and --artefact (an "
                          "exported encoder)")
    if run is not None:
        return encoder_from_run(run, features or "backbone", device)
    encoder = encoder_from_artefact(artefact, device, threads)  # type: ignore[arg-type]
    if features is not None and check_features(features) != encoder.card.features:
        raise ConfigError(
            f"artefact '{artefact}' gives {encoder.card.features} features, not {features}; "
            f"export it again with --features {features}"
        )
    return encoder
