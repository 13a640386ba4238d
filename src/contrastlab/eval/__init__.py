"""Evaluation of frozen encoders: weighted kNN, linear probe, label-fraction subsets, few-shot
episodes; fine-tuning (``eval.finetune``) and transfer (``eval.transfer``) work on run directories.
"""

from contrastlab.eval.features import extract_features
from contrastlab.eval.fewshot import fewshot_evaluate, prototype_predict
from contrastlab.eval.knn import knn_accuracy, knn_predict
from contrastlab.eval.linear import linear_probe
from contrastlab.eval.protocols import PROTOCOLS, evaluate_features, score_features
from contrastlab.eval.subsets import label_fraction_subset

__all__ = ["PROTOCOLS", "evaluate_features", "extract_features", "fewshot_evaluate",
           "knn_accuracy", "knn_predict", "label_fraction_subset", "linear_probe",
           "prototype_predict", "score_features"]
