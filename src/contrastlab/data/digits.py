"""scikit-learn's bundled 8x8 handwritten digits (no download).

1,797 greyscale 8x8 images with labels 0-9. The pixel values 0..16 are rescaled to 0..255 as
``round(v * 255 / 16)``. The data has no official split; it is split with ``test_fraction`` and
``split_seed``.
"""

from __future__ import annotations

import numpy as np

from contrastlab.data.dataset import ImageDataset
from contrastlab.data.split import make_dataset

DIGITS_CLASSES: list[str] = [str(i) for i in range(10)]


def read_digits() -> ImageDataset:
    """Load the digits as one labelled dataset of uint8 (1797, 1, 8, 8) images."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)
    images = np.rint(values * 255.0 / 16.0).clip(0, 255).astype(np.uint8)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    ids = [f"digits:{i}" for i in range(len(labels))]
    return make_dataset(images, labels, list(DIGITS_CLASSES), ids, "digits")
