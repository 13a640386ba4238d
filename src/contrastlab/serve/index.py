r"""Nearest-neighbour indexes over embeddings (FAISS), ranked by cosine similarity.

Vectors are L2-normalised before they are added and queries before they are searched, and the
index ranks by inner product, so the score of a hit is the cosine similarity
:math:`\cos(q, x) = q^\top x / (\lVert q\rVert \lVert x\rVert)`.

Kinds:

* ``flat``: exact search, every query compared with every vector (``IndexFlatIP``).
* ``ivf``: inverted file (Jegou, Douze & Schmid, TPAMI 2011): k-means splits the space into
  ``nlist`` cells (default about 4 sqrt(N)); a query visits the ``nprobe`` nearest cells only.
* ``hnsw``: hierarchical navigable small-world graph (Malkov & Yashunin, TPAMI 2018) with ``M``
  links per node, built with beam ``ef_construction`` and searched with beam ``ef_search``.

An index is a folder holding ``index.faiss`` (the FAISS index) and ``index.json`` (ids, labels,
class names, texts, kind, parameters and the metadata of the embeddings, used to check a query
encoder against it: :func:`check_compatible` for image runs, :func:`check_space` for the
spaces of text and image-text runs); both are replaced atomically together
(:mod:`contrastlab.atomic`). Only load index folders you made or trust: FAISS reads them with
native code.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contrastlab.atomic import write_atomic_group
from contrastlab.errors import ConfigError, DataError, unknown_name
from contrastlab.serve.deps import require
from contrastlab.serve.progress import Phase, quiet_phase

INDEX_KINDS = ("flat", "ivf", "hnsw")
INDEX_FILE = "index.faiss"
META_FILE = "index.json"

#: Vectors added per call while building, so that progress can be shown.
ADD_CHUNK = 16_384


def _faiss() -> Any:
    return require("faiss", "building or searching an index")


def normalized(vectors: np.ndarray) -> np.ndarray:
    """A float32 C-contiguous copy of ``vectors`` with every row scaled to unit L2 norm."""
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, 1e-12)
    return out


def default_nlist(n: int) -> int:
    """IVF cells: about 4 sqrt(n), with at least 39 training vectors per cell (FAISS's minimum
    for a stable k-means)."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


@dataclass
class IndexParams:
    """Construction and search settings (None: the default for the kind and size)."""

    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 40
    ef_search: int = 64

    def check(self) -> None:
        for name in ("nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class SearchHit:
    """One neighbour: its id, cosine similarity, label, class name and text (when known)."""

    id: str
    score: float
    label: int | None = None
    rank: int = 0
    class_name: str | None = None
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "id": self.id, "score": self.score}
        if self.label is not None:
            out["label"] = self.label
        if self.class_name is not None:
            out["class"] = self.class_name
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass
class VectorIndex:
    """A FAISS index with the ids (and labels, texts) of its rows."""

    index: Any
    kind: str
    ids: list[str]
    labels: list[int] | None = None
    params: IndexParams = field(default_factory=IndexParams)
    meta: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    classes: list[str] | None = None
    texts: list[str] | None = None

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the IVF ``nprobe`` / HNSW ``ef_search`` used by later searches."""
        if nprobe is not None:
            self.params.nprobe = nprobe
        if ef_search is not None:
            self.params.ef_search = ef_search
        self.params.check()
        if self.kind == "ivf" and self.params.nprobe is not None:
            self.index.nprobe = min(self.params.nprobe, self.index.nlist)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.params.ef_search

    def search_arrays(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS search of (Q, D) queries: scores and row numbers (Q, k), -1 where fewer
        than k vectors were found."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.dim:
            raise DataError(f"queries have dimension {queries.shape[1]} but the index holds "
                            f"{self.dim}-dimensional vectors")
        return self.index.search(normalized(queries), min(k, max(len(self), 1)))

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` most cosine-similar vectors of each query, best first."""
        scores, rows = self.search_arrays(queries, k)
        results = []
        for query_scores, query_rows in zip(scores, rows, strict=True):
            hits = []
            for score, row in zip(query_scores, query_rows, strict=True):
                if row < 0:
                    continue
                label = None if self.labels is None else int(self.labels[row])
                text = None if self.texts is None else self.texts[row]
                hits.append(SearchHit(self.ids[row], float(score), label, len(hits) + 1,
                                      self.class_name(label), text))
            results.append(hits)
        return results

    def class_name(self, label: int | None) -> str | None:
        """The class name of ``label``, when the index knows its classes."""
        if label is None or self.classes is None or not 0 <= label < len(self.classes):
            return None
        return str(self.classes[label])

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/index.faiss`` and ``folder/index.json`` (both replaced atomically).

        Raises:
            ConfigError: ``folder`` is a file.
            WriteError: the disk is full or the folder is not writable; a previous index there
                is intact and no temporary file is left.
        """
        faiss = _faiss()
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"index output '{folder}' exists and is not a folder")
        info = json.dumps({"kind": self.kind, "dim": self.dim, "count": len(self),
                           "ids": self.ids, "labels": self.labels, "classes": self.classes,
                           "params": self.params.__dict__, "meta": self.meta,
                           "build_seconds": self.build_seconds,
                           **({} if self.texts is None else {"texts": self.texts})})
        write_atomic_group(
            [(folder / INDEX_FILE, lambda tmp: faiss.write_index(self.index, str(tmp))),
             (folder / META_FILE, lambda tmp: tmp.write_text(info, encoding="utf-8"))],
            "index")
        return folder


def adopt_classes(index: VectorIndex, classes: list[str] | None, index_data: str | None) -> None:
    """Give ``index`` the class names ``classes`` of a run when the index has none of its own
    (an index built before it stored them) and was built from that run's data ``index_data``
    (compared with the ``data`` its embeddings' metadata records)."""
    if index.classes is not None or index.labels is None or not classes:
        return
    if index_data is None or index.meta.get("data") != index_data:
        return
    if max(index.labels, default=-1) < len(classes):
        index.classes = [str(c) for c in classes]


def index_files(folder: str | Path) -> list[Path]:
    """The files of an index folder (those :meth:`VectorIndex.save` writes)."""
    return [Path(folder) / INDEX_FILE, Path(folder) / META_FILE]


def build_index(
    vectors: np.ndarray,
    ids: list[str] | None = None,
    kind: str = "flat",
    labels: np.ndarray | list[int] | None = None,
    params: IndexParams | None = None,
    meta: dict[str, Any] | None = None,
    seed: int = 0,
    classes: list[str] | None = None,
    phase: Phase = quiet_phase,
    texts: list[str] | None = None,
) -> VectorIndex:
    """Build a cosine-similarity index of ``vectors`` (N, D).

    Args:
        vectors: embeddings; normalised here (a copy), so any scale is fine.
        ids: one id per row (default: the row numbers).
        kind: ``flat``, ``ivf`` or ``hnsw``.
        labels: optional labels returned with hits.
        params: construction/search settings.
        meta: metadata of the embeddings (encoder, features), kept with the index.
        seed: seed of the IVF k-means and of its training sample.
        classes: class names of the labels, returned with hits.
        texts: one text per row (a sentence, an image's captions), returned with hits.
        phase: progress of the k-means training and of the adding (see
            :mod:`contrastlab.serve.progress`).
    """
    faiss = _faiss()
    if kind not in INDEX_KINDS:
        raise unknown_name("index kind", kind, INDEX_KINDS)
    params = params or IndexParams()
    params.check()
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise DataError(f"cannot index embeddings of shape {vectors.shape}; need (N, D), N >= 1")
    if not np.all(np.isfinite(vectors)):
        raise DataError("the embeddings contain NaN or infinite values")
    n, dim = vectors.shape
    ids = [str(i) for i in range(n)] if ids is None else [str(v) for v in ids]
    if len(ids) != n:
        raise DataError(f"{n} vectors but {len(ids)} ids")
    if texts is not None and len(texts) != n:
        raise DataError(f"{n} vectors but {len(texts)} texts")
    data = normalized(vectors)
    start = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
    else:
        nlist = params.nlist or default_nlist(n)
        if nlist > n:
            raise ConfigError(f"nlist {nlist} is larger than the number of vectors ({n})")
        params.nlist = nlist
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        sample_size = min(n, max(64 * nlist, 10_000))
        rng = np.random.default_rng(seed)
        sample = data[np.sort(rng.choice(n, sample_size, replace=False))] \
            if sample_size < n else data
        with phase(f"IVF: k-means of {len(sample):,} vectors into {nlist:,} cells", None):
            index.train(sample)
        if params.nprobe is None:
            params.nprobe = min(nlist, max(8, nlist // 32))
    with phase(f"adding {n:,} vectors to the {kind} index", n) as advance:
        for first in range(0, n, ADD_CHUNK):
            index.add(data[first:first + ADD_CHUNK])
            advance(min(ADD_CHUNK, n - first))
    elapsed = time.perf_counter() - start
    labels_list = None if labels is None else [int(v) for v in labels]
    built = VectorIndex(index, kind, ids, labels_list, params, dict(meta or {}), elapsed,
                        None if classes is None else [str(c) for c in classes],
                        None if texts is None else [str(t) for t in texts])
    built.set_search_params()
    return built


def load_index(folder: str | Path) -> VectorIndex:
    """Read an index folder written by :meth:`VectorIndex.save`."""
    faiss = _faiss()
    folder = Path(folder)
    index_path, meta_path = folder / INDEX_FILE, folder / META_FILE
    if not folder.is_dir() or not index_path.is_file() or not meta_path.is_file():
        raise DataError(f"'{folder}' is not an index folder (expected {INDEX_FILE} and "
                        f"{META_FILE} in it; build one with `contrastlab index build`)")
    try:
        info = json.loads(meta_path.read_text())
        index = faiss.read_index(str(index_path))
        params = IndexParams(**info.get("params", {}))
        classes, texts = info.get("classes"), info.get("texts")
        loaded = VectorIndex(index, info["kind"], [str(v) for v in info["ids"]],
                             info.get("labels"), params, dict(info.get("meta") or {}),
                             float(info.get("build_seconds", 0.0)),
                             None if classes is None else [str(c) for c in classes],
                             None if texts is None else [str(t) for t in texts])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise DataError(f"cannot read index '{folder}': {error!r}") from error
    if len(loaded.ids) != len(loaded):
        raise DataError(f"index '{folder}' holds {len(loaded)} vectors but {len(loaded.ids)} ids")
    if loaded.texts is not None and len(loaded.texts) != len(loaded):
        raise DataError(f"index '{folder}' holds {len(loaded)} vectors but {len(loaded.texts)} "
                        "texts")
    loaded.set_search_params()
    return loaded


def check_compatible(index: VectorIndex, card_json: dict[str, Any], where: str) -> None:
    """Raise ConfigError when the query encoder (its card) cannot search ``index``."""
    dim = int(card_json["embedding_dim"])
    if dim != index.dim:
        raise ConfigError(f"{where}: the encoder gives {dim}-dimensional embeddings but the "
                          f"index holds {index.dim}-dimensional vectors; use the run or "
                          "artefact the embeddings were made with")
    space = (card_json.get("model_meta") or {}).get("space")
    if index.meta.get("space") is not None or space is not None:
        check_space(index, space, dim, where)
        return
    for key in ("features", "backbone", "method"):
        ours, theirs = card_json.get(key), index.meta.get(key)
        if theirs is not None and ours is not None and ours != theirs:
            raise ConfigError(f"{where}: the index was built from {key} '{theirs}' but the "
                              f"encoder has {key} '{ours}'; use the same encoder for both")


def _describe_space(meta: dict[str, Any]) -> str:
    kind = meta.get("run_kind", "image")
    tower = meta.get("tower") or ("text" if meta.get("modality") == "text" else "image")
    source = f" ('{meta['source']}')" if meta.get("source") else ""
    article = "an" if kind.startswith("image") else "a"
    return f"{tower} embeddings of {article} {kind} run{source}"


def check_space(index: VectorIndex, space: str | None, dim: int, where: str,
                query: str = "the query") -> None:
    """Raise ConfigError unless a query embedded into ``space`` (``FINGERPRINT/text``,
    ``/shared`` or ``/image-backbone``: :mod:`contrastlab.serve.text_encoders`) with ``dim``
    dimensions can search ``index``: same dimension, and the same space as the index's
    embeddings (an index of a bare array, without metadata, is checked by dimension only)."""
    theirs = index.meta.get("space")
    if theirs == space or (theirs is None and not index.meta):
        if dim != index.dim:
            raise ConfigError(f"{where}: {query} gives {dim}-dimensional embeddings but the "
                              f"index holds {index.dim}-dimensional vectors; use the run or "
                              "artefact the embeddings were made with")
        return
    if theirs is None:
        raise ConfigError(f"{where}: the index holds {_describe_space(index.meta)} (method "
                          f"'{index.meta.get('method')}', backbone '{index.meta.get('backbone')}'"
                          f"), not embeddings of this run; {query} can only search an index of "
                          "the same run's embeddings")
    if space is None:
        raise ConfigError(f"{where}: the index holds {_describe_space(index.meta)}; search it "
                          "with --run of that run (or its exported towers), not an image run")
    same_run = theirs.split("/")[0] == space.split("/")[0]
    why = ("the index holds the image tower's features before the projection, which are not "
           "in the shared space; embed the images again with --features projector (the default)"
           if same_run else "the index was built from another run's embeddings (or the run "
           "changed since)")
    raise ConfigError(f"{where}: {query} embeds into space {space} but the index holds "
                      f"{_describe_space(index.meta)} in space {theirs}: {why}; embed and index "
                      "with the run you query with")
