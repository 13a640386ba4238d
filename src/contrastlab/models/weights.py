"""Local pretrained weights for a backbone (``--weights FILE``), matched to it key by key.

The file is a state dict saved by torch (``.pt``, ``.pth``, ``.bin``: read with
``torch.load(weights_only=True)``, so a crafted file cannot run code) or a ``.safetensors``
file, written by timm, torchvision or contrastlab. Nothing is downloaded.

Where the tensors are found in the file:

* a contrastlab checkpoint (``RUN/checkpoints/last.pt``, a dict with ``model`` and
  ``model_meta``): the ``backbone.`` entries of its ``model`` (the online encoder; momentum
  and teacher copies are other entries);
* a dict whose values are tensors: the state dict itself;
* otherwise the first of ``state_dict``, ``model``, ``model_state_dict``, ``model_state``,
  ``teacher``, ``net``, ``module`` that holds a dict of tensors (the usual wrappers of training
  scripts; DINO's checkpoints keep the teacher under ``teacher``).

How keys are matched: on both sides (file and backbone) the wrappers' leading prefixes are
removed, repeatedly: ``module.`` (DataParallel), ``_orig_mod.`` (torch.compile), ``backbone.``,
``encoder.``, ``encoder_q.`` (MoCo v1/v2), ``base_encoder.`` (MoCo v3), ``model.`` (the timm
wrapper here, and many scripts), ``net.`` (the torchvision ResNet wrapper here). Every tensor of
the backbone (parameters and buffers; ``num_batches_tracked`` may be absent) must then be found
with the same shape; file tensors left over are ignored, the classifier heads (``fc.``,
``head.``, ``classifier.``, ``head_dist.``, ``last_linear.``) by design. A file that does not
fit (another architecture, another depth, another number of input channels) is refused naming
the file, how many tensors matched and the first that did not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastlab.errors import CheckpointError, ConfigError

WRAPPER_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.", "encoder_q.",
                    "base_encoder.", "model.", "net.")
HEAD_PREFIXES = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "teacher", "net",
               "module")
#: buffers a file may lack (batch norm's step counter, unused with momentum-based running stats)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
SHOWN = 3


@dataclass(frozen=True)
class LoadedWeights:
    """What :func:`load_backbone_weights` loaded: the file, its short hash, the tensors loaded
    and the file's tensors left out (classifier heads, and others)."""

    path: str
    sha256: str
    tensors: int
    heads_left_out: tuple[str, ...]
    ignored: tuple[str, ...]

    def to_meta(self) -> dict[str, Any]:
        """The record kept in a run's model metadata."""
        return {"path": self.path, "sha256": self.sha256, "tensors": self.tensors}

    def summary(self) -> str:
        """One line for the training output."""
        text = f"loaded {self.tensors} backbone tensors from {self.path} (sha256 {self.sha256})"
        if self.heads_left_out:
            text += f"; left out the classifier ({_some(self.heads_left_out)})"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} other tensor(s) ({_some(self.ignored)})"
        return text


def _some(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "")


def file_digest(path: str | Path, length: int = 12) -> str:
    """The first ``length`` hex digits of the file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def check_weights_file(path: str | Path) -> Path:
    """``path`` as a Path, or CheckpointError when it is not a readable file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"weights '{path}' is a folder; give the weights file itself (a "
                              ".pt/.pth/.safetensors state dict, e.g. RUN/checkpoints/last.pt)")
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    return path


def _tensors_only(values: Mapping[Any, Any]) -> dict[str, Tensor]:
    return {str(k): v for k, v in values.items() if isinstance(v, Tensor)}


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(v, Tensor) for v in value.values()))


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file, found as the module docstring says (keys as in the file,
    a contrastlab checkpoint's ``backbone.`` prefix kept)."""
    path = check_weights_file(path)
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"reading '{path}' needs the safetensors library: pip install "
                              "safetensors") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"cannot read weights file '{path}' as safetensors ({error})"
                                  ) from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure: the file cannot be read safely
        raise CheckpointError(_unreadable(path, error)) from error
    return _find_state_dict(loaded, path)


def _unreadable(path: Path, error: Exception) -> str:
    """A short message for a file torch cannot load safely (torch's own text suggests
    ``weights_only=False``, which would let a crafted file run code: not repeated)."""
    text = str(error).strip()
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        why = (f"it asks for the Python object '{found.group(1)}', and a weights file holds only "
               "tensors (a crafted file could run code this way; refused for safety)")
    elif path.stat().st_size == 0:
        why = "the file is empty"
    else:
        first = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
        why = ("a safe (weights-only) load cannot read it" if "Weights only load failed" in first
               else first[:200])
    return (f"cannot read weights file '{path}' safely: {why}. Save the state dict itself "
            "(torch.save(model.state_dict(), path)) or use .safetensors")


def _find_state_dict(loaded: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(loaded, Mapping) and "model_meta" in loaded and isinstance(
            loaded.get("model"), Mapping):  # a contrastlab checkpoint: its online backbone
        backbone = {k: v for k, v in _tensors_only(loaded["model"]).items()
                    if k.startswith("backbone.")}
        if not backbone:
            raise CheckpointError(f"contrastlab checkpoint '{path}' holds no backbone tensors")
        return backbone
    if _is_state_dict(loaded):
        return _tensors_only(loaded)
    if isinstance(loaded, Mapping):
        for key in NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping) and _tensors_only(loaded[key]):
                return _tensors_only(loaded[key])
        if _tensors_only(loaded):
            return _tensors_only(loaded)
        shown = ", ".join(map(str, list(loaded)[:8]))
        raise CheckpointError(f"weights file '{path}' holds no state dict of tensors (top-level "
                              f"keys: {shown}); save model.state_dict()")
    raise CheckpointError(f"weights file '{path}' holds a {type(loaded).__name__}, not a state "
                          "dict; save model.state_dict()")


def canonical_key(key: str) -> str:
    """``key`` without its wrappers' leading prefixes (see the module docstring)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def _by_canonical_key(keys: list[str], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in keys:
        canonical = canonical_key(key)
        if canonical in found:
            raise CheckpointError(
                f"{where} holds two tensors for '{canonical}' ('{found[canonical]}' and "
                f"'{key}'); save the backbone's state dict alone"
            )
        found[canonical] = key
    return found


def match_state_dict(target: Mapping[str, Tensor], source: Mapping[str, Tensor], path: str,
                     name: str) -> tuple[dict[str, Tensor], list[str]]:
    """``{target key: source tensor}`` for every tensor of ``target`` (the backbone's state dict)
    and the source keys left over; CheckpointError when the file does not fit.

    ``path`` and ``name`` (the backbone's) only name things in the message.
    """
    ours = _by_canonical_key(list(target), f"backbone '{name}'")
    theirs = _by_canonical_key(list(source), f"weights file '{path}'")
    matched: dict[str, Tensor] = {}
    missing: list[str] = []
    wrong: list[str] = []
    channels_hint = ""
    for canonical, key in ours.items():
        if canonical not in theirs:
            if not canonical.endswith(OPTIONAL_SUFFIXES):
                missing.append(canonical)
            continue
        tensor, mine = source[theirs[canonical]], target[key]
        if tensor.shape != mine.shape:
            wrong.append(f"{canonical} (file {list(tensor.shape)}, backbone {list(mine.shape)})")
            if (tensor.ndim == 4 and mine.ndim == 4 and tensor.shape[1] != mine.shape[1]
                    and {tensor.shape[1], mine.shape[1]} == {1, 3} and not channels_hint):
                channels_hint = (f" (the file's first layer takes {tensor.shape[1]}-channel "
                                 f"images, the data has {mine.shape[1]})")
            continue
        matched[key] = tensor
    needed = sum(1 for c in ours if not c.endswith(OPTIONAL_SUFFIXES))
    if missing or wrong:
        fitting = sum(1 for key in matched if not key.endswith(OPTIONAL_SUFFIXES))
        problems = []
        if wrong:
            problems.append(f"{len(wrong)} of another shape: {_some(wrong)}{channels_hint}")
        if missing:
            problems.append(f"{len(missing)} missing from the file: {_some(missing)}")
        raise CheckpointError(
            f"weights file '{path}' does not fit backbone '{name}': {fitting} of {needed} "
            f"tensors matched; {'; '.join(problems)}. The file holds {len(source)} tensors "
            f"(e.g. {_some(list(source))}). Use weights of the same architecture, depth and "
            "number of input channels, or leave out --weights"
        )
    used = {theirs[canonical] for canonical in ours if canonical in theirs}
    return matched, [key for key in source if key not in used]


def load_backbone_weights(backbone: nn.Module, path: str | Path,
                          name: str | None = None) -> LoadedWeights:
    """Copy the weights in ``path`` into ``backbone`` (in place, after its initialisation).

    Raises:
        CheckpointError: the file is missing, unreadable, or does not fit the backbone (naming
            the file and how many tensors matched).
    """
    path = check_weights_file(path)
    name = name or type(backbone).__name__
    source = read_state_dict(path)
    target = backbone.state_dict()
    matched, left_over = match_state_dict(target, source, str(path), name)
    backbone.load_state_dict({**target, **matched}, strict=True)
    heads = tuple(k for k in left_over if canonical_key(k).startswith(HEAD_PREFIXES))
    ignored = tuple(k for k in left_over if k not in heads)
    return LoadedWeights(path=str(path.resolve()), sha256=file_digest(path),
                         tensors=len(matched), heads_left_out=heads, ignored=ignored)


__all__ = ["HEAD_PREFIXES", "WRAPPER_PREFIXES", "LoadedWeights", "canonical_key",
           "check_weights_file", "file_digest", "load_backbone_weights", "match_state_dict",
           "read_state_dict"]
