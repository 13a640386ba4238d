"""Evaluation during and at the end of training, as a trainer callback.

Every ``eval_every`` epochs (``--eval-every``; 0: never during training) and once training has
finished, the method's frozen backbone features of the run's own held-out split are scored by
the weighted kNN (k = ``knn_k``) and, at the end, also by the linear probe; the periodic kNN
score decides which checkpoint is ``best.pt``. Data without labels is not evaluated (said once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from contrastlab.data import DatasetSplits
from contrastlab.eval.protocols import evaluate_features
from contrastlab.methods import Method
from contrastlab.training.callbacks import Callback
from contrastlab.views import EvalTransform

if TYPE_CHECKING:
    from contrastlab.training.trainer import Trainer


def evaluate_method(method: Method, splits: DatasetSplits, transform: EvalTransform,
                    device: torch.device, memory_format: torch.memory_format,
                    protocols: tuple[str, ...], k: int, temperature: float,
                    seed: int) -> dict[str, float]:
    """The protocols' accuracy of the method's encoder on the test split (eval mode)."""
    assert splits.test is not None
    method.eval()
    dtype = next(method.parameters()).dtype  # float64 under --precision fp64

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return transform(images).to(dtype).contiguous(memory_format=memory_format)

    return evaluate_features(method.encode, splits.train, splits.test, prepare, device,
                             protocols=protocols, k=k, temperature=temperature, seed=seed)


def format_scores(scores: dict[str, Any]) -> str:
    """``kNN top-1 97.10%, linear top-1 98.20%``."""
    parts = []
    if "knn_top1" in scores:
        parts.append(f"kNN top-1 {100 * scores['knn_top1']:.2f}%")
    if "linear_top1" in scores:
        parts.append(f"linear top-1 {100 * scores['linear_top1']:.2f}%")
    return ", ".join(parts)


class EvaluationCallback(Callback):
    """kNN every ``every`` epochs (0: never) and kNN + linear probe at the end (``at_end``)."""

    def __init__(self, every: int = 0, at_end: bool = True) -> None:
        self.every = every
        self.at_end = at_end

    def _evaluate(self, trainer: Trainer, protocols: tuple[str, ...]) -> dict[str, float]:
        config = trainer.config
        return evaluate_method(trainer.method, trainer.splits, trainer.eval_transform,
                               trainer.device, trainer.memory_format, protocols,
                               config.eval.knn_k, config.eval.knn_temperature, config.run.seed)

    def on_epoch_end(self, trainer: Trainer) -> dict[str, Any] | None:
        epoch = trainer.state.epoch
        if not self.every or epoch % self.every or trainer.splits.test is None:
            return None
        scores = self._evaluate(trainer, ("knn", "linear"))
        trainer.note(f"epoch {epoch}: " + format_scores(scores))
        return scores

    def on_train_end(self, trainer: Trainer) -> dict[str, Any] | None:
        splits = trainer.splits
        if splits.test is None:
            trainer.note("no labels in the data: skipped kNN / linear evaluation")
            return None
        if not self.at_end:
            return None
        scores = self._evaluate(trainer, ("knn", "linear"))
        state = trainer.state
        steps = f"{trainer.epochs_done:.2f}".rstrip("0").rstrip(".")
        trainer.note(f"[bold]{splits.train.name}[/bold] after {steps} epochs "
                     f"({state.global_step} steps, {state.elapsed:.0f}s): "
                     + format_scores(scores))
        assert splits.train.labels is not None
        counts = torch.bincount(splits.train.labels)
        smallest_class = int(counts[counts > 0].min())
        k = trainer.config.eval.knn_k
        if k > smallest_class:
            trainer.note(
                f"note: kNN used k={k} neighbours but the smallest class has only "
                f"{smallest_class} training images, which lowers kNN accuracy; compare with "
                f"`contrastlab eval knn --run {trainer.run.root} --k 20`"
            )
        return scores


__all__ = ["EvaluationCallback", "evaluate_method", "format_scores"]
