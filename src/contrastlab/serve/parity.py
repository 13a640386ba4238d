r"""Parity of an exported encoder with the PyTorch model it came from.

Two measures, both on data the run never trained on where the run has a held-out split:

* mean (and minimum) cosine similarity between the PyTorch and the exported embedding of the same
  image, :math:`\frac1n \sum_i \cos(f(x_i), \hat f(x_i))`, on a sample of ``sample_size`` images;
* the weighted kNN accuracy (Wu et al. 2018) of the exported embeddings minus that of the PyTorch
  embeddings, on the evaluation split, with the same training images as neighbours.

The kNN figure follows the run's own evaluation protocol by default: every training image is a
neighbour, with the run's ``knn_k`` and ``knn_temperature``, so the PyTorch figure is the one in
the run's ``final_metrics.json``. ``knn_train_limit`` caps the neighbours to a seeded random
subset (faster on large data); the figures then differ from the run's own, and the report says
so (:meth:`ParityReport.knn_protocol`).

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
from contrastlab.serve.progress import Advance, Phase, quiet_phase

COSINE_THRESHOLD = {"fp32": 0.999, "int8": 0.99}
KNN_DROP_THRESHOLD: dict[str, float | None] = {"fp32": None, "int8": 0.5}


@dataclass
class ParityReport:
    """Cosine agreement and kNN accuracies of the reference and the exported encoder.

    ``knn_train`` training images of ``knn_train_total`` were the neighbours of ``knn_test``
    test images (``knn_k`` neighbours, temperature ``knn_temperature``); ``run_knn`` is the
    run's own kNN figure when the caller knows it.
    """

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
    knn_train_total: int = 0
    knn_k: int = 0
    knn_temperature: float = 0.0
    run_knn: float | None = None

    @property
    def passed(self) -> bool:
        ok = self.mean_cosine >= self.cosine_threshold
        if self.knn_drop_points is not None and self.knn_drop_threshold is not None:
            ok = ok and self.knn_drop_points <= self.knn_drop_threshold
        return ok

    @property
    def knn_all_training_images(self) -> bool:
        return self.knn_train == self.knn_train_total

    def knn_protocol(self) -> str:
        """How the kNN figures were measured and how they relate to the run's own figure."""
        settings = f"k={self.knn_k}, temperature {self.knn_temperature:g}"
        run = "" if self.run_knn is None else f"{100 * self.run_knn:.2f}%"
        if self.knn_all_training_images:
            text = (f"all {self.knn_train:,} training images as neighbours ({settings}): the "
                    "run's own kNN protocol, as `contrastlab eval knn --run RUN` measures it")
            return text + (f" (the run's final_metrics.json says {run})" if run else "")
        text = (f"{self.knn_train:,} of the {self.knn_train_total:,} training images as "
                f"neighbours (a seeded random subset, --knn-train-limit; {settings}), so the "
                "figures differ from the run's own kNN")
        return text + (f" ({run} with all of them)" if run else " (measured with all of them)")

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
    knn_train_limit: int | None = None,
    k: int = 200,
    temperature: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
    phase: Phase = quiet_phase,
) -> ParityReport:
    """Compare ``exported`` with ``reference`` on ``splits`` (see the module doc).

    ``knn_train_limit``: most training images used as kNN neighbours (None: all, the run's
    protocol). ``phase``: progress display (:mod:`contrastlab.serve.progress`).
    """
    held_out = splits.test if splits.test is not None else splits.train
    sample = _take(held_out.images, sample_size, seed)
    train, test = splits.train, splits.test
    with_knn = test is not None and train.labels is not None and test.labels is not None
    total_train = train.images.shape[0]
    if with_knn and knn_train_limit is not None and total_train > knn_train_limit:
        generator = torch.Generator().manual_seed(seed + 1)
        keep = torch.randperm(total_train, generator=generator)[:knn_train_limit]
        train = train.subset(keep.sort().values)
    work = 2 * (len(sample) + (len(train) + len(test) if with_knn else 0))  # type: ignore[arg-type]
    with phase("parity check (PyTorch and export)", work) as advance:
        def embed(encoder: Encoder, images: torch.Tensor, normalize: bool = True,
                  step: Advance = advance) -> np.ndarray:
            return embed_images(encoder, images, batch_size, normalize, step)

        cosines = cosine_agreement(embed(reference, sample), embed(exported, sample))
        report = ParityReport(precision, int(sample.shape[0]), float(cosines.mean()),
                              float(cosines.min()), COSINE_THRESHOLD[precision])
        if not with_knn:
            return report
        accuracies = []
        for encoder in (reference, exported):
            # unnormalised features: knn_accuracy normalises them once, as evaluation does
            train_features = torch.from_numpy(embed(encoder, train.images, False))
            test_features = torch.from_numpy(embed(encoder, test.images, False))
            accuracies.append(knn_accuracy(train_features, train.labels, test_features,
                                           test.labels, k, temperature))
    report.knn_reference, report.knn_exported = accuracies
    report.knn_drop_points = 100.0 * (accuracies[0] - accuracies[1])
    report.knn_drop_threshold = KNN_DROP_THRESHOLD[precision]
    report.knn_train, report.knn_test = len(train), len(test)
    report.knn_train_total, report.knn_k, report.knn_temperature = total_train, k, temperature
    return report
