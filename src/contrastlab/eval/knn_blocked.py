"""Exact top-k cosine search over a feature bank larger than memory, block by block.

The bank (the training features, possibly a tensor over a temporary file, see
:mod:`contrastlab.eval.feature_store`) is read in blocks of rows; each block is L2-normalised
and searched with FAISS (``IndexFlatIP``: exact inner products) for every query of a chunk, and
the per-block top-k lists are merged into one (FAISS's ``ResultHeap``), so the neighbours are
those of a search over the whole bank at once. Without the ``faiss`` package (the ``serve``
extra) the same blocks are searched with a matrix product and ``torch.topk``, merged by a
second ``topk``.

Memory is bounded by the cap (:func:`contrastlab.eval.feature_store.max_feature_memory`): a
bank block takes at most an eighth of it, a chunk of queries with their running top-k lists a
quarter, and (without FAISS) the similarity tile an eighth. Each chunk of queries reads the
whole bank once, and the chunks are as large as the cap allows, so a bank read from disk is read
``ceil(queries / chunk)`` times (once, for typical test sets and the default cap). Small
searches (a chunk times a block under :data:`contrastlab.eval.threads.SMALL_WORK` similarities)
run on one thread, FAISS's OpenMP threads included: on a busy machine a tiny search took 12 ms
on two threads and 0.02 ms on one (measured).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.eval.threads import SMALL_WORK, single_thread_if_small
from contrastlab.phases import phase

_FLOAT = 4
_HEAP_ENTRY = 12  # a float32 score and an int64 row per neighbour


def faiss_module() -> ModuleType | None:
    """The ``faiss`` module, or None when it is not installed."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


@contextmanager
def _threads_for(faiss: ModuleType | None, similarities: int) -> Iterator[None]:
    """One thread (torch's and FAISS's) inside, for fewer than ``SMALL_WORK`` similarities."""
    with single_thread_if_small(similarities):
        if faiss is None or similarities >= SMALL_WORK:
            yield
            return
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(previous)


def block_sizes(dim: int, k: int, max_memory: int) -> tuple[int, int]:
    """``(bank rows per block, queries per chunk)`` for ``dim`` features and ``k`` neighbours
    within ``max_memory`` bytes (see the module doc); at least 1 each."""
    block_rows = max(1, max_memory // (8 * _FLOAT * dim))
    query_rows = max(1, max_memory // (4 * (_FLOAT * dim + _HEAP_ENTRY * k)))
    return block_rows, query_rows


def _blocks(bank: Tensor, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, normalised float32 block)`` of ``bank``, block after block."""
    for start in range(0, bank.shape[0], block_rows):
        block = F.normalize(bank[start:start + block_rows].float(), dim=1)
        yield start, np.ascontiguousarray(block.numpy())


def _search_faiss(faiss: ModuleType, bank: Tensor, queries: np.ndarray, k: int,
                  block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start, block in _blocks(bank, block_rows):
        index = faiss.IndexFlatIP(block.shape[1])
        index.add(block)
        scores, rows = index.search(queries, min(k, len(block)))
        heap.add_result(scores, rows + start)
    heap.finalize()
    return heap.D, heap.I


def _search_torch(bank: Tensor, queries: np.ndarray, k: int, block_rows: int, tile_rows: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    query = torch.from_numpy(queries)
    best_scores = torch.full((len(query), 0), -float("inf"))
    best_rows = torch.zeros((len(query), 0), dtype=torch.int64)
    for start, block in _blocks(bank, block_rows):
        keys = torch.from_numpy(block)
        scores, rows = [], []
        for first in range(0, len(query), tile_rows):
            top = (query[first:first + tile_rows] @ keys.t()).topk(min(k, len(keys)), dim=1)
            scores.append(top.values)
            rows.append(top.indices + start)
        merged = torch.cat([best_scores, torch.cat(scores)], dim=1)
        merged_rows = torch.cat([best_rows, torch.cat(rows)], dim=1)
        top = merged.topk(min(k, merged.shape[1]), dim=1)
        best_scores, best_rows = top.values, merged_rows.gather(1, top.indices)
    return best_scores.numpy(), best_rows.numpy()


@torch.no_grad()
def blocked_top_k(bank: Tensor, queries: Tensor, k: int, max_memory: int,
                  use_faiss: bool = True) -> Iterator[tuple[int, Tensor, Tensor]]:
    """The ``k`` most cosine-similar bank rows of every query, chunk of queries by chunk.

    Args:
        bank: (N, D) features (any float dtype; a tensor over a file is read block by block).
        queries: (Q, D) features (read chunk by chunk too).
        k: neighbours per query, 1 <= k <= N.
        max_memory: the cap in bytes that sets the block and chunk sizes.
        use_faiss: search with FAISS when it is installed (else, or when False, with torch).

    Yields:
        ``(first query, similarities (q, k) float32, bank rows (q, k) int64)`` per chunk, each
        row sorted by decreasing similarity.
    """
    rows, dim = bank.shape
    if not 1 <= k <= rows:
        raise ValueError(f"k must lie in 1..{rows} (the bank's rows), got {k}")
    block_rows, query_rows = block_sizes(dim, k, max_memory)
    faiss = faiss_module() if use_faiss else None
    tile_rows = max(1, max_memory // (8 * _FLOAT * min(block_rows, rows)))
    blocks = -(-rows // block_rows)
    with phase(f"kNN search of {len(queries):,} queries in {rows:,} features "
               f"({blocks} block(s))", total=len(queries)) as progress:
        for first in range(0, len(queries), query_rows):
            chunk = F.normalize(queries[first:first + query_rows].float(), dim=1)
            chunk_array = np.ascontiguousarray(chunk.numpy())
            with _threads_for(faiss, len(chunk_array) * min(block_rows, rows)):
                if faiss is not None:
                    scores, found = _search_faiss(faiss, bank, chunk_array, k, block_rows)
                else:
                    scores, found = _search_torch(bank, chunk_array, k, block_rows, tile_rows)
            yield first, torch.from_numpy(scores), torch.from_numpy(found)
            progress.advance(len(chunk_array))


__all__ = ["blocked_top_k", "block_sizes", "faiss_module"]
