"""Evaluation during and at the end of training, as a trainer callback.

Every ``eval_every`` epochs (``--eval-every``; 0: never during training) and once training has
finished, the frozen backbone features of the run's own held-out split are scored by the
weighted kNN (k = ``knn_k``) and the linear probe; the periodic kNN score decides which
checkpoint is ``best.pt``. Data without labels is not evaluated (said once). A run streamed
from tar shards holds no evaluation split: at the end its shards are read once more, streamed,
split as ``contrastlab eval`` splits them (:func:`contrastlab.eval.runs.load_eval_data`), and
scored the same way; there is no evaluation during such a run.

The encoder is scored exactly as ``contrastlab eval`` scores the saved run: a float32, eager,
default-layout copy rebuilt from the run's metadata with the trained weights, through the same
:func:`contrastlab.eval.runs.score_loaded`. Training may use channels_last, ``--compile`` or
fp64, whose features differ in the last bits, and the probe's fit would follow them; so the
figure printed at the end of training and ``contrastlab eval linear --run RUN`` are the same
number (on the same device).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from contrastlab.eval.runs import Splits, load_eval_data, score_loaded
from contrastlab.runs import LoadedRun, rebuild_method
from contrastlab.training.callbacks import Callback

if TYPE_CHECKING:
    from contrastlab.training.trainer import Trainer


def as_loaded_run(trainer: Trainer) -> LoadedRun:
    """The trainer's method as ``contrastlab.load`` would rebuild it from the checkpoint: float32,
    eager, default memory layout, eval mode, the trained weights."""
    custom = trainer.custom_backbone
    method = rebuild_method(trainer.meta, copy.deepcopy(custom) if custom is not None else None)
    for module in method.modules():  # a deep copy of a compiled module would stay compiled
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    method.load_state_dict(trainer.method.state_dict())
    method.to(device=trainer.device, dtype=torch.float32,
              memory_format=torch.contiguous_format).eval()
    return LoadedRun(method, trainer.meta, trainer.config.flat())


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

    def _evaluate(self, trainer: Trainer, protocols: tuple[str, ...],
                  splits: Splits | None = None) -> dict[str, float]:
        config = trainer.config
        loaded = as_loaded_run(trainer)
        scores = score_loaded(loaded, splits or trainer.splits, protocols,
                              config.eval.knn_k, config.eval.knn_temperature, trainer.device)
        scores.pop("n_train", None)
        if splits is None:
            scores.pop("n_test", None)
        return scores

    def _streamed_splits(self, trainer: Trainer) -> Splits | None:
        """The streamed run's evaluation split (None, said, without labels)."""
        if not trainer.streamed.catalog.has_labels:
            trainer.note("no labels in the data: skipped kNN / linear evaluation")
            return None
        trainer.note("streamed data: evaluating with one more pass over the data (features "
                     "only; the run's held-out split, as 'contrastlab eval knn' makes it)")
        # the evaluation data depend only on the run's settings and metadata: no model copy here
        return load_eval_data(LoadedRun(trainer.method, trainer.meta, trainer.config.flat()))

    def on_epoch_end(self, trainer: Trainer) -> dict[str, Any] | None:
        epoch = trainer.state.epoch
        if not self.every or epoch % self.every or trainer.splits.test is None:
            return None
        scores = self._evaluate(trainer, ("knn", "linear"))
        trainer.note(f"epoch {epoch}: " + format_scores(scores))
        return scores

    def on_train_end(self, trainer: Trainer) -> dict[str, Any] | None:
        splits: Splits = trainer.splits
        streamed = None
        if getattr(trainer, "streamed", None) is not None:
            if not self.at_end:
                return None
            streamed = self._streamed_splits(trainer)
            if streamed is None:
                return None
            splits = streamed
        elif splits.test is None:
            trainer.note("no labels in the data: skipped kNN / linear evaluation")
            return None
        if not self.at_end:
            return None
        scores = self._evaluate(trainer, ("knn", "linear"), streamed)
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


__all__ = ["EvaluationCallback", "as_loaded_run", "format_scores"]
