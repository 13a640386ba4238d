"""Evaluation of frozen encoders: weighted kNN and linear probe."""

from contrastlab.eval.features import extract_features
from contrastlab.eval.knn import knn_accuracy, knn_predict
from contrastlab.eval.linear import linear_probe
from contrastlab.eval.protocols import PROTOCOLS, evaluate_features, score_features

__all__ = ["PROTOCOLS", "evaluate_features", "extract_features", "knn_accuracy", "knn_predict",
           "linear_probe", "score_features"]
