"""Spearman's correlation against scipy's, and the STS protocol on a tiny run-free encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

from contrastlab.data.text import SentencePairs
from contrastlab.errors import DataError
from contrastlab.eval.sts import average_ranks, spearman, sts_scores


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=50).astype(float)  # many ties, as STS gold scores have
    y = x + rng.normal(size=50)
    assert spearman(y, x) == pytest.approx(spearmanr(y, x).statistic, abs=1e-12)
    np.testing.assert_allclose(average_ranks(x), rankdata(x))


def test_sts_scores_of_a_known_embedding() -> None:
    vectors = {"a": [1.0, 0.0], "b": [1.0, 0.1], "c": [0.0, 1.0], "d": [1.0, 1.0]}

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.tensor([vectors[t] for t in texts])

    pairs = SentencePairs(["a", "a", "a"], ["b", "c", "d"], [5.0, 0.0, 2.5])
    scores = sts_scores(embed, pairs)
    assert scores["spearman"] == pytest.approx(100.0) and scores["pairs"] == 3
    cosines = [torch.nn.functional.cosine_similarity(embed(["a"]), embed([t])).item()
               for t in "bcd"]
    assert scores["pearson"] == pytest.approx(100 * pearsonr(cosines, [5, 0, 2.5]).statistic)
    with pytest.raises(DataError, match="needs a score"):
        sts_scores(embed, SentencePairs(["a", "a"], ["b", "c"], None))
