"""Where frozen features are kept: in memory, or in a temporary file once they exceed a cap.

A feature matrix of N x D float32 takes ``4 N D`` bytes. Up to the cap
(:func:`max_feature_memory`: ``CONTRASTLAB_MAX_FEATURE_MEMORY``, default 2 GiB) it is an
ordinary tensor; above it, the rows are written into a file (in ``CONTRASTLAB_FEATURE_DIR``, else
the system's temporary folder) mapped into memory (``numpy.memmap``) and returned as a tensor
over that mapping, so the operating system pages it in and out: kNN then searches it block by
block (:mod:`contrastlab.eval.knn_blocked`). The file is removed as soon as it is mapped (the
mapping keeps its space until the tensor is freed), so nothing is left behind, even after a
crash; its whole size is reserved up front, so a full disk fails at once with a message, not
half-way through a pass.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contrastlab.data.shard_writer import parse_size
from contrastlab.errors import DataError

#: Environment variable: the most bytes a feature matrix (or a kNN search) keeps in memory.
MEMORY_VARIABLE = "CONTRASTLAB_MAX_FEATURE_MEMORY"
#: Environment variable: the folder of the temporary feature files.
FOLDER_VARIABLE = "CONTRASTLAB_FEATURE_DIR"
#: The cap when the variable is not set.
DEFAULT_MAX_FEATURE_MEMORY = 2 * 2**30


def max_feature_memory(value: int | str | None = None) -> int:
    """The cap in bytes: ``value`` (bytes, or a size such as ``512MB``) when given, else
    ``$CONTRASTLAB_MAX_FEATURE_MEMORY``, else 2 GiB.

    Raises:
        ConfigError: a value that is not a positive size.
    """
    if value is None:
        value = os.environ.get(MEMORY_VARIABLE) or DEFAULT_MAX_FEATURE_MEMORY
        return parse_size(value, what=MEMORY_VARIABLE)
    return parse_size(value, what="max_feature_memory")


def feature_folder() -> Path:
    """Where temporary feature files go: ``$CONTRASTLAB_FEATURE_DIR``, else the system's
    temporary folder."""
    return Path(os.environ.get(FOLDER_VARIABLE) or tempfile.gettempdir())


def _file_backed(rows: int, dim: int, folder: Path) -> np.ndarray:
    """A float32 (rows, dim) array mapped onto an unlinked temporary file in ``folder``."""
    size = rows * dim * 4
    try:
        handle, name = tempfile.mkstemp(prefix="contrastlab-features-", suffix=".f32",
                                        dir=folder)
    except OSError as error:
        raise DataError(f"cannot make a temporary feature file in {folder}: {error}; set "
                        f"{FOLDER_VARIABLE} to a writable folder") from error
    try:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(handle, 0, size)
            else:  # pragma: no cover (not Linux)
                os.ftruncate(handle, size)
        except OSError as error:
            raise DataError(
                f"cannot reserve {size / 2**30:.2f} GiB for {rows:,} x {dim} features in "
                f"{name}: {error}; free space there, set {FOLDER_VARIABLE} to a folder with "
                f"room, or raise {MEMORY_VARIABLE} to keep them in memory") from error
        array = np.memmap(name, dtype=np.float32, mode="r+", shape=(rows, dim))
    finally:
        os.close(handle)
        os.unlink(name)
    return array


class FeatureStore:
    """Rows of a (rows, dim) float32 matrix, filled in order (see the module doc).

    Args:
        rows: the most rows that will be added.
        dim: features per row.
        max_memory: the cap in bytes (None: :func:`max_feature_memory`).
        folder: where a file-backed matrix goes (None: :func:`feature_folder`).
    """

    def __init__(self, rows: int, dim: int, max_memory: int | None = None,
                 folder: Path | None = None) -> None:
        cap = max_feature_memory() if max_memory is None else max_memory
        self.spilled = rows * dim * 4 > cap
        if self.spilled:
            self.array = _file_backed(rows, dim, folder or feature_folder())
        else:
            self.array = np.empty((rows, dim), dtype=np.float32)
        self.filled = 0

    def add(self, features: Tensor | np.ndarray) -> None:
        """Append float32 (n, dim) rows."""
        end = self.filled + len(features)
        if end > len(self.array):
            raise ValueError(f"{end} feature rows added to a store of {len(self.array)}")
        self.array[self.filled:end] = (features.numpy() if isinstance(features, Tensor)
                                       else features)
        self.filled = end

    def rows(self) -> np.ndarray:
        """The rows added so far (a view of the file's mapping when spilled)."""
        return self.array[:self.filled]

    def result(self) -> Tensor:
        """The rows added so far as a float32 tensor (over the file's mapping when spilled)."""
        return torch.from_numpy(self.rows())


__all__ = ["DEFAULT_MAX_FEATURE_MEMORY", "FOLDER_VARIABLE", "FeatureStore", "MEMORY_VARIABLE",
           "feature_folder", "max_feature_memory"]
