"""Local Hugging Face model folders as text encoders: ``--text-backbone hf:PATH``.

A folder as ``model.save_pretrained(PATH)`` and ``tokenizer.save_pretrained(PATH)`` write it:
``config.json``, the weights (``model.safetensors``, ``pytorch_model.bin`` or a sharded index)
and the tokenizer's files (``tokenizer.json``, or a ``vocab.txt`` / ``vocab.json`` +
``merges.txt`` / SentencePiece model). It is loaded with ``transformers`` (``AutoConfig``,
``AutoModel``, ``AutoTokenizer``) from local files only (``local_files_only=True``: nothing is
downloaded, the path is never taken for a Hub name) and without running code shipped in the
folder (``trust_remote_code=False``). A run does not need the folder again:
:func:`folder_files` gives the config and tokenizer files to store in the checkpoint beside
the weights, and :func:`rebuild_encoder` builds the encoder and tokenizer from them.

``transformers`` is an optional dependency (``pip install 'contrastlab[text]'``), imported
only when an ``hf:`` backbone is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from contrastlab.data.hf_tokenizer import HfTokenizer
from contrastlab.errors import CheckpointError, ConfigError
from contrastlab.models.hf_text_encoder import HfTextEncoder

HF_PREFIX = "hf:"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")
#: what a folder must hold, said in every error about one
FOLDER_HINT = ("a local Hugging Face model folder holds config.json, the weights "
               f"({' or '.join(WEIGHT_FILES[::2])}) and the tokenizer files (e.g. "
               "tokenizer.json), as model.save_pretrained(PATH) and "
               "tokenizer.save_pretrained(PATH) write them; nothing is downloaded")


def hf_folder(text_backbone: str) -> Path | None:
    """The folder of an ``hf:PATH`` backbone name, None for the others."""
    if not text_backbone.startswith(HF_PREFIX):
        return None
    return Path(text_backbone[len(HF_PREFIX):]).expanduser()


def import_transformers() -> ModuleType:
    """The transformers module, or ConfigError saying how to install it."""
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ConfigError("hf: text backbones need the transformers library: pip install "
                          "transformers (or pip install 'contrastlab[text]')") from None


@contextlib.contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """transformers' progress bars and warnings off (the errors are ours), restored after."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def check_folder(path: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of the model folder ``path``, after checking that the folder
    holds what :data:`FOLDER_HINT` says.

    Raises:
        ConfigError: naming the path and what is missing.
    """
    where = f"text_backbone hf:{path}"
    if not path.exists():
        raise ConfigError(f"{where}: the folder '{path}' does not exist ({FOLDER_HINT})")
    if not path.is_dir():
        raise ConfigError(f"{where}: '{path}' is not a folder ({FOLDER_HINT})")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{where}: '{path}' has no config.json, so it is not a Hugging Face "
                          f"model folder ({FOLDER_HINT})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where}: '{config_path}' is not valid JSON ({error})") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ConfigError(f"{where}: '{config_path}' names no model_type; write the folder "
                          "with model.save_pretrained(PATH)")
    if "auto_map" in config:
        raise ConfigError(f"{where}: the model of '{path}' needs Python code of its own "
                          "(auto_map in config.json); contrastlab does not run code from model "
                          "folders (trust_remote_code): use a model type transformers ships")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"{where}: '{path}' holds no weights ({', '.join(WEIGHT_FILES)}); "
                          "save them with model.save_pretrained(PATH)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"{where}: '{path}' holds no tokenizer files (one of "
                          f"{', '.join(TOKENIZER_FILES)}); save the model's tokenizer there with "
                          "tokenizer.save_pretrained(PATH)")
    return config


def _max_length(config: Any, tokenizer: Any, wanted: int) -> int:
    """``wanted`` capped by the model's positions and the tokenizer's ``model_max_length``."""
    limits = [wanted]
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 1_000_000:
        limits.append(declared)
    return min(limits)


def load_folder(path: str | Path, pool: str = "mean", max_length: int = 48
                ) -> tuple[HfTextEncoder, HfTokenizer, dict[str, Any]]:
    """The encoder (pretrained weights, float32, train mode) and tokenizer of the model folder
    ``path``, and a record of where they came from: the resolved path, the model type, the
    SHA-256 of ``config.json``, the weight files' sizes and the transformers version.

    Raises:
        ConfigError: the folder is missing or incomplete, or transformers cannot load it.
    """
    folder = Path(path).expanduser().resolve()
    raw_config = check_folder(folder)
    transformers = import_transformers()
    where = f"text_backbone hf:{path}"
    options = {"local_files_only": True, "trust_remote_code": False}
    with _quiet(transformers):
        try:
            config = transformers.AutoConfig.from_pretrained(str(folder), **options)
        except (ValueError, KeyError, OSError) as error:
            raise ConfigError(
                f"{where}: transformers {transformers.__version__} cannot load the model type "
                f"'{raw_config['model_type']}' of '{folder / 'config.json'}' "
                f"({_first_line(error)}); upgrade transformers or give a model folder of a "
                "type it knows") from None
        if getattr(config, "is_encoder_decoder", False):
            raise ConfigError(f"{where}: '{folder}' holds an encoder-decoder model "
                              f"({config.model_type}); give an encoder (BERT-like) model")
        try:
            model = transformers.AutoModel.from_pretrained(str(folder), config=config,
                                                           **options)
        except Exception as error:  # noqa: BLE001 - any failure: the folder cannot be used
            raise ConfigError(f"{where}: transformers cannot load the weights of '{folder}' "
                              f"({_first_line(error)}); {FOLDER_HINT}") from None
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), **options)
        except Exception as error:  # noqa: BLE001
            raise ConfigError(f"{where}: transformers cannot load the tokenizer of '{folder}' "
                              f"({_first_line(error)}); save the model's tokenizer there with "
                              "tokenizer.save_pretrained(PATH)") from None
    encoder = HfTextEncoder(model.float(), pool, _max_length(config, tokenizer, max_length))
    source = {
        "path": str(folder),
        "model_type": str(config.model_type),
        "config_sha256": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
        "weights": {name: (folder / name).stat().st_size for name in WEIGHT_FILES
                    if (folder / name).is_file()},
        "transformers": transformers.__version__,
    }
    return encoder.train(), HfTokenizer(tokenizer), source


def folder_files(encoder: HfTextEncoder, tokenizer: HfTokenizer) -> dict[str, Tensor]:
    """``{file name: bytes as a uint8 tensor}``: the model's ``config.json`` and the
    tokenizer's files as ``save_pretrained`` writes them (plain data a weights-only checkpoint
    holds)."""
    with tempfile.TemporaryDirectory(prefix="contrastlab-hf-") as tmp:
        encoder.model.config.save_pretrained(tmp)
        tokenizer.tokenizer.save_pretrained(tmp)
        return {p.name: torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8).clone()
                for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def rebuild_encoder(files: Mapping[str, Tensor], pool: str, max_length: int, run: str
                    ) -> tuple[HfTextEncoder, HfTokenizer]:
    """The encoder (freshly initialised: load the run's weights into it) and tokenizer from
    the files :func:`folder_files` gave; ``run`` names the run in errors.

    Raises:
        CheckpointError: the files are not a model folder transformers can read.
    """
    transformers = import_transformers()
    options = {"local_files_only": True, "trust_remote_code": False}
    with tempfile.TemporaryDirectory(prefix="contrastlab-hf-") as tmp:
        for name, data in files.items():
            if Path(name).name != name or name.startswith("."):
                raise CheckpointError(f"the checkpoint of '{run}' names a model file "
                                      f"'{name}' outside its folder")
            (Path(tmp) / name).write_bytes(data.numpy().tobytes())
        with _quiet(transformers):
            try:
                config = transformers.AutoConfig.from_pretrained(tmp, **options)
                model = transformers.AutoModel.from_config(config)
                tokenizer = transformers.AutoTokenizer.from_pretrained(tmp, **options)
            except Exception as error:  # noqa: BLE001 - e.g. a type this transformers lacks
                raise CheckpointError(
                    f"the Hugging Face model of '{run}' cannot be rebuilt by transformers "
                    f"{transformers.__version__} ({_first_line(error)}); use the version that "
                    "trained it (config.json in the checkpoint names it)") from None
    return (HfTextEncoder(model.float(), pool, _max_length(config, tokenizer, max_length)),
            HfTokenizer(tokenizer))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["FOLDER_HINT", "HF_PREFIX", "check_folder", "folder_files", "hf_folder",
           "import_transformers", "load_folder", "rebuild_encoder"]
