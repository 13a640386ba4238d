"""Embeddings of a dataset, and the files that hold them.

Two layouts, chosen by the output name:

* ``NAME.npy``: a float32 (N, D) array (``numpy.load(..., allow_pickle=False)`` reads it), with
  ``NAME.json`` beside it: ``{"ids": [...], "labels": [...] | null, "classes": [...] | null,
  "meta": {...}}`` (and ``"texts": [...]`` when the rows are texts, or images with captions).
* ``NAME.parquet`` (needs ``pyarrow``): columns ``id`` (string), ``label`` (int64, only for
  labelled data), ``text`` (string, when the rows have texts) and ``embedding`` (fixed-size list
  of D float32); the same ``meta`` as JSON in the schema metadata under ``contrastlab``.

``meta`` records the encoder (method, backbone, features, embedding dim, run), whether the
vectors are L2-normalised and where the images came from, so an index built from the file can
check that a query encoder matches it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastlab.atomic import write_atomic, write_atomic_group
from contrastlab.errors import ConfigError, DataError
from contrastlab.eval.feature_store import FeatureStore
from contrastlab.serve.deps import require
from contrastlab.serve.encoders import Encoder

EMBEDDING_SUFFIXES = (".npy", ".parquet")


@dataclass
class EmbeddingTable:
    """Vectors (float32, N x D) with one id per row, optional labels and metadata, and
    optional texts (the sentence of each row, or the captions of each image)."""

    vectors: np.ndarray
    ids: list[str]
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise DataError(f"embeddings must be a 2-d array (N, D), got shape "
                            f"{self.vectors.shape}")
        n = self.vectors.shape[0]
        if len(self.ids) != n:
            raise DataError(f"{n} embeddings but {len(self.ids)} ids")
        if self.labels is not None and self.labels.shape != (n,):
            raise DataError(f"{n} embeddings but labels of shape {self.labels.shape}")
        if self.texts is not None and len(self.texts) != n:
            raise DataError(f"{n} embeddings but {len(self.texts)} texts")

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def embed_images(
    encoder: Encoder,
    images: torch.Tensor,
    batch_size: int = 256,
    normalize: bool = True,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings float32 (N, D) of uint8 images (N, C, H, W), ``batch_size`` at a time;
    ``progress(n)`` is called after each batch with the number of images it held."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if images.shape[0] == 0:
        raise DataError("no images to embed")
    card = encoder.card
    if images.shape[1] != card.channels:
        raise DataError(f"the images have {images.shape[1]} channel(s) but the encoder takes "
                        f"{card.channels}")
    out = np.empty((images.shape[0], card.embedding_dim), dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        out[start:start + batch.shape[0]] = encoder.embed(batch, normalize=normalize)
        if progress is not None:
            progress(int(batch.shape[0]))
    return out


def embed_batches(
    encoder: Encoder,
    batches: Iterable[torch.Tensor],
    rows: int,
    normalize: bool = True,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings float32 (n, D) of uint8 batches (at most ``rows`` images in all), as they come
    (streamed shards: the images are never held together); held in memory up to the
    feature-memory cap, in a temporary file above it (:mod:`contrastlab.eval.feature_store`)."""
    card = encoder.card
    store = FeatureStore(rows, card.embedding_dim)
    for batch in batches:
        if batch.shape[1] != card.channels:
            raise DataError(f"the images have {batch.shape[1]} channel(s) but the encoder takes "
                            f"{card.channels}")
        store.add(encoder.embed(batch, normalize=normalize))
        if progress is not None:
            progress(int(batch.shape[0]))
    if store.filled == 0:
        raise DataError("no images to embed")
    return store.rows()


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise ConfigError(f"embeddings file '{path}' must end in .npy or .parquet")
    return suffix


def sidecar_path(path: Path) -> Path:
    """Where ids, labels and metadata of ``NAME.npy`` go: ``NAME.json``."""
    return path.with_suffix(".json")


def output_files(path: str | Path) -> list[Path]:
    """The files :func:`save_embeddings` writes for ``path`` (``NAME.npy`` and ``NAME.json``,
    or ``NAME.parquet``)."""
    path = Path(path)
    return [path, sidecar_path(path)] if _check_suffix(path) == ".npy" else [path]


def save_embeddings(table: EmbeddingTable, path: str | Path) -> list[Path]:
    """Write ``table`` as ``.npy`` + ``.json`` or as ``.parquet``; returns the files written.

    The files are replaced atomically (both or neither for ``.npy`` + ``.json``).

    Raises:
        WriteError: the disk is full or the folder is not writable; the previous files are
            intact and no temporary file is left.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    vectors = np.ascontiguousarray(table.vectors, dtype=np.float32)
    labels = None if table.labels is None else [int(v) for v in table.labels]
    if suffix == ".npy":
        def write_npy(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, vectors, allow_pickle=False)

        side = json.dumps({"ids": list(table.ids), "labels": labels, "classes": table.classes,
                           "meta": table.meta,
                           **({} if table.texts is None else {"texts": list(table.texts)})})
        return write_atomic_group(
            [(path, write_npy),
             (sidecar_path(path), lambda tmp: tmp.write_text(side, encoding="utf-8"))],
            "embeddings")
    pa = require("pyarrow", "writing embeddings as Parquet", extra=None)
    pq = require("pyarrow.parquet", "writing embeddings as Parquet", extra=None)
    dim = vectors.shape[1]
    columns = {"id": pa.array(list(table.ids), pa.string())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    if table.texts is not None:
        columns["text"] = pa.array(list(table.texts), pa.string())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), pa.float32()), dim)
    meta = {**table.meta, "classes": table.classes}
    arrow = pa.table(columns).replace_schema_metadata({"contrastlab": json.dumps(meta)})
    return [write_atomic(path, lambda tmp: pq.write_table(arrow, str(tmp)), "embeddings")]


def _load_npy(path: Path) -> EmbeddingTable:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read embeddings '{path}': {error}") from error
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise DataError(f"'{path}' holds a {vectors.dtype} array of shape {vectors.shape}; "
                        "expected floating-point embeddings (N, D)")
    side_path = sidecar_path(path)
    if not side_path.exists():  # a bare array: ids are row numbers
        return EmbeddingTable(vectors.astype(np.float32, copy=False),
                              [str(i) for i in range(vectors.shape[0])])
    try:
        side = json.loads(side_path.read_text())
        labels, texts = side.get("labels"), side.get("texts")
        return EmbeddingTable(
            vectors.astype(np.float32, copy=False), [str(v) for v in side["ids"]],
            None if labels is None else np.asarray(labels, dtype=np.int64),
            side.get("classes"), dict(side.get("meta") or {}),
            None if texts is None else [str(v) for v in texts])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"cannot read the ids/labels file '{side_path}': {error!r}") from error


def _load_parquet(path: Path) -> EmbeddingTable:
    pq = require("pyarrow.parquet", "reading Parquet embeddings", extra=None)
    try:
        arrow = pq.read_table(str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read embeddings '{path}': {error}") from error
    names = set(arrow.column_names)
    if not {"id", "embedding"} <= names:
        raise DataError(f"'{path}' needs the columns 'id' and 'embedding', has {sorted(names)}")
    column = arrow.column("embedding").combine_chunks()
    n = len(column)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = flat.reshape(n, -1) if n else flat.reshape(0, 0)
    meta_raw = (arrow.schema.metadata or {}).get(b"contrastlab", b"{}")
    meta = json.loads(meta_raw)
    classes = meta.pop("classes", None)
    labels = (np.asarray(arrow.column("label").to_pylist(), dtype=np.int64)
              if "label" in names else None)
    texts = [str(v) for v in arrow.column("text").to_pylist()] if "text" in names else None
    return EmbeddingTable(vectors, [str(v) for v in arrow.column("id").to_pylist()], labels,
                          classes, meta, texts)


def load_embeddings(path: str | Path) -> EmbeddingTable:
    """Read a file written by :func:`save_embeddings` (or a bare float ``.npy`` array, whose ids
    are then the row numbers)."""
    path = Path(path)
    suffix = _check_suffix(path)
    if not path.is_file():
        raise DataError(f"embeddings file '{path}' does not exist")
    return _load_npy(path) if suffix == ".npy" else _load_parquet(path)
