"""Search with a text run: embedding speed (PyTorch and the exported ONNX tower), the export's
size and parity, and paraphrase retrieval through a FAISS index on an STS Benchmark file.

    python bench/text_search.py --run RUN --data ../shared/data/stsbenchmark/sts-test.csv

Every distinct sentence of the file is embedded and indexed (flat, cosine). For each pair with a
gold score >= ``--min-score`` (5.0: "completely equivalent") and two different sentences, the
first sentence is the query; R@k is the share of queries whose paired sentence is among the k
nearest other sentences (the query's own row left out). CPU, one process; times are wall-clock
seconds of the embedding pass alone (tokenising included), on whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from contrastlab.data.text import read_pairs
from contrastlab.serve.index import build_index
from contrastlab.serve.text_encoders import text_encoder_from_artefact, text_encoder_from_run
from contrastlab.serve.text_export import export_text_onnx, text_parity


def recall_at(index_rows: np.ndarray, targets: list[int], k: int) -> float:
    """Share of rows whose target is among their first k neighbours."""
    return float(np.mean([t in row[:k] for row, t in zip(index_rows, targets, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a text run (train-text)")
    parser.add_argument("--data", required=True, help="an STS Benchmark .csv (or pairs file)")
    parser.add_argument("--min-score", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = read_pairs(args.data)
    sentences = list(dict.fromkeys(pairs.first + pairs.second))
    row = {s: i for i, s in enumerate(sentences)}
    encoder = text_encoder_from_run(args.run, "cpu")
    start = time.perf_counter()
    vectors = encoder.embed_texts(sentences, args.batch_size)
    torch_seconds = time.perf_counter() - start
    found: dict[str, object] = {"run": args.run, "backbone": encoder.card.backbone,
                                "dim": encoder.card.embedding_dim, "sentences": len(sentences),
                                "torch_sentences_per_s": round(len(sentences) / torch_seconds)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "text.onnx"
        start = time.perf_counter()
        export_text_onnx(encoder, path)
        found["export_s"] = round(time.perf_counter() - start, 1)
        found["onnx_mib"] = round(path.stat().st_size / 2 ** 20, 1)
        exported = text_encoder_from_artefact(path, "cpu", threads=args.threads)
        start = time.perf_counter()
        exported.embed_texts(sentences, args.batch_size)
        found["onnx_sentences_per_s"] = round(len(sentences) / (time.perf_counter() - start))
        report = text_parity(encoder, exported, sentences, sample_size=len(sentences))
        found["parity_mean_cosine"] = round(report.mean_cosine, 7)
        found["parity_min_cosine"] = round(report.min_cosine, 7)
    index = build_index(vectors, [str(i) for i in range(len(sentences))])
    queries, targets = [], []
    for first, second, score in zip(pairs.first, pairs.second, pairs.scores or [], strict=False):
        if score >= args.min_score and first != second:
            queries.append(row[first])
            targets.append(row[second])
    _, rows = index.search_arrays(vectors[queries], 11)
    neighbours = np.array([[r for r in hit if r != q][:10] for hit, q in
                           zip(rows, queries, strict=True)])
    found.update({"queries": len(queries), "R@1": round(100 * recall_at(neighbours, targets, 1), 2),
                  "R@10": round(100 * recall_at(neighbours, targets, 10), 2)})
    print(json.dumps(found))


if __name__ == "__main__":
    main()
