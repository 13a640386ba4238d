"""Nearest-neighbour search on synthetic embeddings: exact (flat) vs IVF vs HNSW (FAISS).

Vectors: ``--n`` (default 1,000,000) x ``--dim`` (128) float32 drawn from a mixture of
``--clusters`` (1,000) isotropic Gaussians, centre norm about 4 and noise of norm about
4 x ``--spread`` (1.4: clusters overlap, so IVF with one probe misses neighbours; 2 is
nearly uniform on the sphere, 1 keeps every neighbour in its own cluster), then L2-normalised as the
index does; queries are ``--queries`` fresh draws from the same mixture. (Uniform random
vectors would have no neighbour structure at all.) Recall@10 is measured against the flat
(exact) index's top 10. Queries/s: the best of three batched search calls of all queries, with
FAISS's threads (OpenMP, every core).

    python bench/search_index.py [--n 1000000] [--dim 128] [--queries 1000]
        [--kinds flat,ivf,hnsw] [--nprobe 1,4,16,64] [--ef-search 32,64,128]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import emit, machine

from contrastlab.serve.index import IndexParams, build_index, normalized


def mixture(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator,
            spread: float) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks, to bound memory
        stop = min(n, start + 100_000)
        picks = rng.integers(0, len(centres), stop - start)
        out[start:stop] = centres[picks] + spread * rng.standard_normal(
            (stop - start, dim), dtype=np.float32)
    return normalized(out)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10.0
                          for f, t in zip(found, truth, strict=True)]))


def timed_search(index, queries: np.ndarray, k: int = 10,
                 repeats: int = 3) -> tuple[np.ndarray, float]:
    index.search_arrays(queries[:10], k)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        _, rows = index.search_arrays(queries, k)
        best = min(best, time.perf_counter() - start)
    return rows, len(queries) / best


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=1.4)
    parser.add_argument("--kinds", default="flat,ivf,hnsw")
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", default="1,4,16,64")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", default="32,64,128")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    rng = np.random.default_rng(args.seed)
    centres = (rng.standard_normal((args.clusters, args.dim)) / np.sqrt(args.dim) * 4) \
        .astype(np.float32)
    start = time.perf_counter()
    vectors = mixture(args.n, args.dim, centres, rng, args.spread / np.sqrt(args.dim) * 4)
    queries = mixture(args.queries, args.dim, centres, rng, args.spread / np.sqrt(args.dim) * 4)
    data_s = time.perf_counter() - start
    kinds = args.kinds.split(",")
    results: dict[str, dict] = {}

    note(f"data ready ({data_s:.0f} s); exact search for the ground truth")
    flat = build_index(vectors, kind="flat")
    truth, flat_qps = timed_search(flat, queries, repeats=1)  # slow: once
    results["flat"] = {"build_s": round(flat.build_seconds, 2), "queries_per_s": round(flat_qps),
                       "recall_at_10": 1.0}
    del flat
    if "ivf" in kinds:
        note("building IVF")
        ivf = build_index(vectors, kind="ivf", params=IndexParams(nlist=args.nlist))
        entry = {"build_s": round(ivf.build_seconds, 2), "nlist": ivf.params.nlist, "runs": []}
        for nprobe in (int(v) for v in args.nprobe.split(",")):
            ivf.set_search_params(nprobe=nprobe)
            rows, qps = timed_search(ivf, queries)
            entry["runs"].append({"nprobe": nprobe, "queries_per_s": round(qps),
                                  "recall_at_10": round(recall_at_10(rows, truth), 4)})
        results["ivf"] = entry
        del ivf
    if "hnsw" in kinds:
        note("building HNSW")
        hnsw = build_index(vectors, kind="hnsw", params=IndexParams(
            hnsw_m=args.hnsw_m, ef_construction=args.ef_construction))
        entry = {"build_s": round(hnsw.build_seconds, 2), "M": args.hnsw_m,
                 "ef_construction": args.ef_construction, "runs": []}
        for ef in (int(v) for v in args.ef_search.split(",")):
            hnsw.set_search_params(ef_search=ef)
            rows, qps = timed_search(hnsw, queries)
            entry["runs"].append({"ef_search": ef, "queries_per_s": round(qps),
                                  "recall_at_10": round(recall_at_10(rows, truth), 4)})
        results["hnsw"] = entry
    emit({"benchmark": "search_index", "n": args.n, "dim": args.dim, "queries": args.queries,
          "clusters": args.clusters, "data_seconds": round(data_s, 1), "faiss": faiss.__version__,
          "faiss_threads": faiss.omp_get_max_threads(), **results, "machine": machine()})


if __name__ == "__main__":
    main()
