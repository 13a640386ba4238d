"""A 2-D map of embeddings: UMAP (McInnes et al. 2018) when ``umap-learn`` is installed, else
t-SNE (van der Maaten & Hinton 2008, scikit-learn) on at most ``MAX_POINTS`` points."""

from __future__ import annotations

import numpy as np

MAX_POINTS = 2000


def subset_indices(n: int, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """A seeded, sorted subset of ``range(n)`` of at most ``max_points`` indices."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def map_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """Embed (N, D) features in 2-D; returns the (N, 2) points and the name of the algorithm.

    Features are L2-normalised first (the evaluation's cosine geometry) and, for t-SNE, reduced
    to at most 50 principal components (the usual speed-up; t-SNE's cost grows with D).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 5:
        raise ValueError(f"map_2d: need at least 5 points (N, D), got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        umap = None
    if umap is not None:
        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed)
        return np.asarray(reducer.fit_transform(x)), "UMAP"
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, (len(x) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    # one OpenMP thread: on a busy machine the Barnes-Hut gradient with 2 threads was measured
    # 30x slower (205 s vs 6 s for 360 points) than with 1
    with threadpool_limits(limits=1):
        return np.asarray(tsne.fit_transform(x)), "t-SNE"
