"""Reading the CIFAR-10 and CIFAR-100 "python version" batch folders, safely.

CIFAR-10: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``;
CIFAR-100: ``train``, ``test`` and ``meta``. Each batch is a pickled dict with bytes keys:
``b'data'`` (uint8, one 3072-byte CHW row per 32x32 RGB image) and ``b'labels'`` (CIFAR-10) or
``b'fine_labels'`` (CIFAR-100); the meta file holds ``b'label_names'`` / ``b'fine_label_names'``.

Pickles can run arbitrary code when loaded, so they are read with :class:`SafeUnpickler`, which
only lets through the few numpy functions and types that rebuild arrays and plain containers;
anything else (``os.system``, ``subprocess``, ``eval``...) raises DataError before it is called.
The batches come with the official train/test split.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from contrastlab.data.dataset import DatasetSplits
from contrastlab.data.split import make_dataset, official_splits
from contrastlab.errors import DataError

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR100_TRAIN = "train"
CIFAR100_TEST = "test"
CIFAR100_META = "meta"

#: Folder names that the official archives unpack to; a folder holding one of them is accepted.
WRAPPER_NAMES: tuple[str, ...] = ("cifar-10-batches-py", "cifar-100-python")

_ROW = 3 * 32 * 32


def _numpy_global(candidates: tuple[str, ...], name: str) -> Any:
    """The first of ``module.name`` over the candidate modules that exists, else None."""
    for module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    return None


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The ``(module, name) -> object`` table that :class:`SafeUnpickler` lets through."""
    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    found: dict[tuple[str, str], Any] = {}
    for module_name in multiarray:
        for name in ("_reconstruct", "scalar"):
            value = _numpy_global(multiarray, name)
            if value is not None:
                found[(module_name, name)] = value
    for module_name in numeric:
        value = _numpy_global(numeric, "_frombuffer")
        if value is not None:
            found[(module_name, "_frombuffer")] = value
    # Python 3 pickles of protocol 2 or lower rebuild bytes with ``_codecs.encode(text, "latin1")``.
    found[("_codecs", "encode")] = codecs.encode
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    for name, value in (
        ("dict", dict),
        ("list", list),
        ("tuple", tuple),
        ("set", set),
        ("frozenset", frozenset),
        ("bytes", bytes),
        ("bytearray", bytearray),
        ("str", str),
        ("int", int),
        ("float", float),
        ("complex", complex),
        ("bool", bool),
    ):
        found[("builtins", name)] = value
        found[("__builtin__", name)] = value
    return found


_ALLOWED: dict[tuple[str, str], Any] = _allowed_globals()


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays and builtin containers.

    Any other global a pickle asks for raises DataError, so loading can never call into ``os``,
    ``subprocess``, ``builtins.eval`` or any other code.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed numpy/builtin global, or raise DataError for anything else."""
        value = _ALLOWED.get((module, name))
        if value is None:
            raise DataError(
                f"refusing to load {self.source}: the pickle asks for '{module}.{name}', which a "
                "CIFAR batch never needs (it may be malicious). Only numpy arrays and plain "
                "containers are allowed; use the official CIFAR python batches"
            )
        return value

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids: CIFAR batches have none."""
        raise DataError(f"refusing to load {self.source}: the pickle uses persistent ids")


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`, turning every failure into DataError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        return SafeUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # any unpickling failure means a bad file
        raise DataError(
            f"cannot unpickle {path}: {exc.__class__.__name__}: {exc}. It is not a valid CIFAR "
            "python batch; download the 'python version' of CIFAR again"
        ) from exc


def _field(record: Any, key: str, path: Path) -> Any:
    """``record[key]``, trying the bytes key first; DataError naming the file if absent."""
    if not isinstance(record, dict):
        raise DataError(
            f"{path} does not hold a dict but {type(record).__name__}; not a CIFAR batch"
        )
    for candidate in (key.encode(), key):
        if candidate in record:
            return record[candidate]
    present = ", ".join(sorted(repr(k) for k in record)[:10])
    raise DataError(f"{path} has no field {key!r} (fields: {present}); not a CIFAR batch")


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into images (N, 3, 32, 32) and int64 labels, checking both."""
    record = safe_load(path)
    data = _field(record, "data", path)
    labels_raw = _field(record, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(
            f"{path}: field 'data' must be a uint8 array (N, {_ROW}), got "
            f"{getattr(data, 'dtype', type(data).__name__)} with shape "
            f"{getattr(data, 'shape', '?')}"
        )
    if data.shape[1] != _ROW:
        raise DataError(
            f"{path}: field 'data' has rows of {data.shape[1]} values, expected {_ROW} "
            "(3 x 32 x 32, channel-major)"
        )
    try:
        labels = np.asarray(labels_raw)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: field {label_key!r} is not a list of integers") from exc
    if labels.shape != (data.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(
            f"{path}: field {label_key!r} must hold {data.shape[0]} integer labels, got shape "
            f"{labels.shape} of {labels.dtype}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_names(path: Path, key: str) -> list[str]:
    """Read the class names stored under ``key`` in a meta file."""
    names = _field(safe_load(path), key, path)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{path}: field {key!r} must be a non-empty list of class names")
    out: list[str] = []
    for item in names:
        if isinstance(item, bytes):
            out.append(item.decode("utf-8", errors="replace"))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise DataError(f"{path}: field {key!r} holds {type(item).__name__}, not names")
    return out


def find_cifar_folder(folder: Path) -> Path | None:
    """The CIFAR batch folder at ``folder`` (or in its one known sub-folder), else None."""
    for candidate in (folder, *(folder / name for name in WRAPPER_NAMES)):
        if (candidate / CIFAR10_META).is_file() and (candidate / CIFAR10_TRAIN[0]).is_file():
            return candidate
        if (candidate / CIFAR100_META).is_file() and (candidate / CIFAR100_TRAIN).is_file():
            return candidate
    return None


def read_cifar(folder: Path) -> DatasetSplits:
    """Read a CIFAR-10 or CIFAR-100 python batch folder (official train/test split)."""
    if (folder / CIFAR10_META).is_file():
        train_files = [folder / name for name in CIFAR10_TRAIN]
        test_file = folder / CIFAR10_TEST
        label_key, classes = "labels", _read_names(folder / CIFAR10_META, "label_names")
        name = "cifar10"
    else:
        train_files = [folder / CIFAR100_TRAIN]
        test_file = folder / CIFAR100_TEST
        label_key, classes = "fine_labels", _read_names(folder / CIFAR100_META, "fine_label_names")
        name = "cifar100"
    missing = [str(path) for path in (*train_files, test_file) if not path.is_file()]
    if missing:
        raise DataError(
            f"CIFAR folder {folder} is incomplete: missing {', '.join(missing)}; download the "
            "complete 'python version' again"
        )
    parts = []
    for files, suffix in ((train_files, "train"), ([test_file], "test")):
        images, labels, ids = [], [], []
        for path in files:
            batch_images, batch_labels = _read_batch(path, label_key)
            bad = np.flatnonzero((batch_labels < 0) | (batch_labels >= len(classes)))
            if bad.size:
                raise DataError(
                    f"{path}: label {int(batch_labels[bad[0]])} at row {int(bad[0])} is outside "
                    f"0..{len(classes) - 1} (the meta file lists {len(classes)} classes)"
                )
            images.append(batch_images)
            labels.append(batch_labels)
            ids.extend(f"{path}:{i}" for i in range(len(batch_labels)))
        parts.append(
            make_dataset(
                np.concatenate(images), np.concatenate(labels), classes, ids, f"{name} ({suffix})"
            )
        )
    return official_splits(parts[0], parts[1])
