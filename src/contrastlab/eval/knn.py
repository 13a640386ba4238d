r"""Weighted k-nearest-neighbour classification on frozen, L2-normalised features.

Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
CVPR 2018, Sec. 3.4: for a test feature f, its k most cosine-similar training features
f_i (similarity s_i) vote for their class c_i with weight exp(s_i / tau); the prediction is the
class with the largest total weight:

.. math::  \hat y = \arg\max_c \sum_{i \in \mathrm{top}k(f)} \mathbb{1}[c_i = c]\, e^{s_i/\tau}

The defaults k = 200 and tau = 0.1 are the paper's (and the standard SSL monitoring protocol's).

Features that fit the feature-memory cap (:func:`contrastlab.eval.feature_store.max_feature_memory`,
2 GiB by default) are searched in memory, as always; a larger bank (held in a temporary file by
:mod:`contrastlab.eval.feature_store`) is searched block by block
(:mod:`contrastlab.eval.knn_blocked`), giving the same neighbours, and votes the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.eval.feature_store import max_feature_memory
from contrastlab.eval.knn_blocked import blocked_top_k


def weighted_vote(top_similarity: Tensor, top_labels: Tensor, temperature: float,
                  num_classes: int) -> Tensor:
    """The class with the largest sum of ``exp(s_i / temperature)`` over each row's neighbours
    (similarities and labels (Q, k)); int64 (Q,)."""
    weights = (top_similarity / temperature).exp()
    votes = torch.zeros(weights.shape[0], num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, top_labels, weights)
    return votes.argmax(dim=1)


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    max_memory: int | None = None,
) -> Tensor:
    """Predicted labels (int64, one per test row) by temperature-weighted kNN voting.

    ``max_memory`` (bytes; None: :func:`max_feature_memory`): when the training and test
    features together take more, the training features are searched block by block.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(k, train_features.shape[0])
    num_classes = num_classes or int(train_labels.max()) + 1
    cap = max_feature_memory() if max_memory is None else max_memory
    if 4 * (train_features.numel() + test_features.numel()) > cap:
        return torch.cat([weighted_vote(similarity.to(torch.float32), train_labels[rows],
                                        temperature, num_classes)
                          for _, similarity, rows in blocked_top_k(train_features, test_features,
                                                                   k, cap)])
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    predictions = []
    for start in range(0, test.shape[0], chunk_size):
        similarity = test[start : start + chunk_size] @ train.t()
        top_similarity, top_index = similarity.topk(k, dim=1)
        predictions.append(weighted_vote(top_similarity, train_labels[top_index], temperature,
                                         num_classes))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    max_memory: int | None = None,
) -> float:
    """Top-1 accuracy of :func:`knn_predict` on the test set."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    predicted = knn_predict(train_features, train_labels, test_features, k, temperature,
                            num_classes, max_memory=max_memory)
    return float((predicted == test_labels).float().mean())
