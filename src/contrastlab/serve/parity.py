r"""Parity of an exported encoder with the PyTorch model it came from.

Two measures, both on data the run never trained on where the run has a held-out split:

* mean (and minimum) cosine similarity between the PyTorch and the exported embedding of the same
  image, :math:`\frac1n \sum_i \cos(f(x_i), \hat f(x_i))`, on a sample of ``sample_size`` images;
* the weighted kNN accuracy (Wu et al. 2018, k = 200, temperature 0.1, as in evaluation) of the
  exported embeddings minus that of the PyTorch embeddings, on the evaluation split, with the
  same (at most ``knn_train_limit``) training images as neighbours.

Thresholds: mean cosine >= 0.999 for float32 artefacts and >= 0.99 for int8; for int8 the kNN
accuracy may drop by at most 0.5 points (for float32 artefacts the difference is reported only:
on a small evaluation split one flipped borderline vote is already several tenths of a point).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from contrastlab.data.dataset import DatasetSplits
from contrastlab.eval.knn import knn_accuracy
from contrastlab.serve.embed import embed_images
from contrastlab.serve.encoders import Encoder

COSINE_THRESHOLD = {"fp32": 0.999, "int8": 0.99}
KNN_DROP_THRESHOLD: dict[str, float | None] = {"fp32": None, "int8": 0.5}


@dataclass
class ParityReport:
    """Cosine agreement and kNN accuracies of the reference and the exported encoder."""

    precision: str
    samples: int
    mean_cosine: float
    min_cosine: float
    cosine_threshold: float
    knn_reference: float | None = None
    knn_exported: float | None = None
    knn_drop_points: float | None = None
    knn_drop_threshold: float | None = None
    knn_train: int = 0
    knn_test: int = 0

    @property
    def passed(self) -> bool:
        ok = self.mean_cosine >= self.cosine_threshold
        if self.knn_drop_points is not None and self.knn_drop_threshold is not None:
            ok = ok and self.knn_drop_points <= self.knn_drop_threshold
        return ok

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def cosine_agreement(reference: np.ndarray, exported: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    a = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    b = exported / np.maximum(np.linalg.norm(exported, axis=1, keepdims=True), 1e-12)
    return np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)


def _take(images: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    if images.shape[0] <= limit:
        return images
    generator = torch.Generator().manual_seed(seed)
    return images[torch.randperm(images.shape[0], generator=generator)[:limit].sort().values]


def parity_check(
    reference: Encoder,
    exported: Encoder,
    splits: DatasetSplits,
    precision: str = "fp32",
    sample_size: int = 512,
    knn_train_limit: int = 10_000,
    k: int = 200,
    temperature: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
) -> ParityReport:
    """Compare ``exported`` with ``reference`` on ``splits`` (see the module doc)."""
    held_out = splits.test if splits.test is not None else splits.train
    sample = _take(held_out.images, sample_size, seed)
    cosines = cosine_agreement(embed_images(reference, sample, batch_size),
                               embed_images(exported, sample, batch_size))
    report = ParityReport(precision, int(sample.shape[0]), float(cosines.mean()),
                          float(cosines.min()), COSINE_THRESHOLD[precision])
    train, test = splits.train, splits.test
    if test is None or train.labels is None or test.labels is None:
        return report
    if train.images.shape[0] > knn_train_limit:
        generator = torch.Generator().manual_seed(seed + 1)
        keep = torch.randperm(train.images.shape[0], generator=generator)[:knn_train_limit]
        train = train.subset(keep.sort().values)
    accuracies = []
    for encoder in (reference, exported):
        train_features = torch.from_numpy(embed_images(encoder, train.images, batch_size))
        test_features = torch.from_numpy(embed_images(encoder, test.images, batch_size))
        accuracies.append(knn_accuracy(train_features, train.labels, test_features,
                                       test.labels, k, temperature))
    report.knn_reference, report.knn_exported = accuracies
    report.knn_drop_points = 100.0 * (accuracies[0] - accuracies[1])
    report.knn_drop_threshold = KNN_DROP_THRESHOLD[precision]
    report.knn_train, report.knn_test = len(train), len(test)
    return report
