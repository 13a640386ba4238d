r"""Fine-tuning evaluation: the pretrained encoder plus a fresh linear head, trained end to end.

As in SimCLR's semi-supervised evaluation (Chen et al., ICML 2020, Sec. 4.2 and Appendix B.5): a
copy of the encoder gets a new linear classifier on its features, and both are trained with
cross-entropy on the labelled (often 1% or 10%) part of the training set, with light augmentation
only (random resized crop and, when the run used it, horizontal flip), then scored on the test
split. The run's own encoder is not modified.

Schedule (its own, independent of pre-training): SGD with Nesterov momentum 0.9 and no weight
decay (as in SimCLR's fine-tuning), learning rate
:math:`\eta_t = \eta\,\frac12(1 + \cos(\pi t / T))` over the T steps, batches drawn without
replacement from a seeded permutation each epoch. The head starts at zero (the loss is then
convex in it and nothing random is drawn for it). Batch normalisation layers are in training mode
while fine-tuning and in eval mode for the test. Small batches run on one CPU thread (see
:mod:`contrastlab.eval.threads`; on the busy 2-core machine fine-tuning on 1% of MNIST took 37 s
on one thread and 167 s on two).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.data import ImageDataset
from contrastlab.errors import ConfigError, DataError
from contrastlab.eval.subsets import check_label_fraction
from contrastlab.eval.threads import single_thread_if_small
from contrastlab.methods import Method
from contrastlab.optim import set_lr, warmup_cosine
from contrastlab.views import AugmentConfig, AugmentedViews, EvalTransform


@dataclass
class FinetuneSettings:
    """Hyper-parameters of :func:`finetune`.

    Attributes:
        epochs: passes over the labelled images; None chooses enough for about ``target_steps``
            steps, between 10 and 100 epochs.
        lr: peak learning rate of SGD (cosine-decayed to 0).
        batch_size: images per step (at most the number of labelled images).
        momentum: Nesterov momentum.
        weight_decay: L2 weight decay (0, as in SimCLR's fine-tuning).
        crop_scale: (min, max) area range of the random resized crop ("mild": 0.5-1).
        flip_p: probability of a horizontal flip; None: the run's (``finetune_run``), else 0.
        target_steps: the step count ``epochs=None`` aims for.
        seed: seed of batch order and augmentation.
    """

    epochs: int | None = None
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 0.0
    crop_scale: tuple[float, float] = (0.5, 1.0)
    flip_p: float | None = None
    target_steps: int = 300
    seed: int = 0

    def check(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 2:
            raise ConfigError(f"--batch-size must be >= 2 (batch normalisation), got "
                              f"{self.batch_size}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def resolved_epochs(self, steps_per_epoch: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return min(100, max(10, math.ceil(self.target_steps / steps_per_epoch)))


class FinetuneModel(nn.Module):
    """A trainable copy of a method's encoder (``encode`` or ``project``) and a linear head."""

    def __init__(self, method: Method, features: str, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.method = copy.deepcopy(method)
        self.features = features
        self.head = nn.Linear(feature_dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: Tensor) -> Tensor:
        encode = self.method.project if self.features == "projector" else self.method.encode
        return self.head(encode(images))


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> int:
    top = logits.topk(k, dim=1).indices
    return int((top == labels.unsqueeze(1)).any(dim=1).sum())


@torch.no_grad()
def _score(model: FinetuneModel, images: Tensor, labels: Tensor,
           transform: Callable[[Tensor], Tensor], num_classes: int, device: torch.device,
           batch_size: int = 512) -> dict[str, float]:
    """Top-1 (and top-5 with >= 5 classes) accuracy of the fine-tuned model in eval mode."""
    model.eval()
    top1 = top5 = 0
    for start in range(0, len(labels), batch_size):
        batch_images = images[start : start + batch_size].to(device)
        batch_labels = labels[start : start + batch_size].to(device)
        logits = model(transform(batch_images)).float()
        top1 += _topk_correct(logits, batch_labels, 1)
        if num_classes >= 5:
            top5 += _topk_correct(logits, batch_labels, 5)
    scores = {"finetune_top1": top1 / len(labels)}
    if num_classes >= 5:
        scores["finetune_top5"] = top5 / len(labels)
    return scores


def finetune(
    method: Method,
    train: ImageDataset,
    test: ImageDataset,
    transform: EvalTransform,
    settings: FinetuneSettings | None = None,
    features: str = "backbone",
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Fine-tune a copy of ``method``'s encoder with a new linear head on ``train`` (the labelled
    images) and return ``finetune_top1`` (and ``finetune_top5`` when there are >= 5 classes) on
    ``test``, with ``finetune_epochs`` and ``finetune_steps``.

    ``transform`` is the run's evaluation transform: its size and normalisation are used for the
    augmented training crops too.
    """
    settings = settings or FinetuneSettings()
    settings.check()
    if train.labels is None or test.labels is None:
        raise DataError("fine-tuning needs labelled training and test images")
    device = torch.device(device)
    num_classes = num_classes or int(max(int(train.labels.max()), int(test.labels.max()))) + 1
    if num_classes < 2:
        raise DataError(f"fine-tuning needs at least 2 classes, '{train.name}' has {num_classes}")
    augment = AugmentedViews(
        transform.output_size, transform.channels, transform.mean, transform.std,
        AugmentConfig(crop_scale=settings.crop_scale, flip_p=settings.flip_p or 0.0, jitter_p=0.0,
                      grey_p=0.0, blur_p=0.0),
        num_views=1,
    )
    with torch.no_grad():
        method.eval()
        probe = method.project if features == "projector" else method.encode
        feature_dim = probe(transform(train.images[:2].to(device))).shape[1]
    model = FinetuneModel(method, features, feature_dim, num_classes).to(device)
    n = len(train)
    batch_size = min(settings.batch_size, n)
    # near-equal batches of at most batch_size images, none of size 1 (batch normalisation)
    steps_per_epoch = max(1, min(math.ceil(n / batch_size), n // 2))
    epochs = settings.resolved_epochs(steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                nesterov=True, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(settings.seed)
    step = 0
    batch_elements = batch_size * train.images[0].numel()
    with torch.enable_grad(), single_thread_if_small(batch_elements, device):
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n, generator=generator)
            for batch in torch.tensor_split(order, steps_per_epoch):
                set_lr(optimizer, settings.lr * warmup_cosine(step / total_steps, 0.0))
                images = train.images[batch].to(device, non_blocking=True)
                labels = train.labels[batch].to(device, non_blocking=True)
                (view,) = augment(images, generator)
                loss = F.cross_entropy(model(view), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    scores = _score(model, test.images, test.labels, transform, num_classes, device)
    return {**scores, "finetune_epochs": epochs, "finetune_steps": total_steps}


def finetune_run(
    run: str | Path,
    label_fraction: float = 1.0,
    settings: FinetuneSettings | None = None,
    features: str = "backbone",
    device: torch.device | str = "cpu",
    subset_seed: int = 0,
    data: str | None = None,
) -> dict[str, Any]:
    """Fine-tune a run's encoder on ``label_fraction`` of its training labels (stratified subset
    drawn with ``subset_seed``) and score it on the run's held-out test split; with ``data``,
    on that data's training labels and test split instead."""
    from contrastlab.eval.runs import (
        check_features,
        labelled_subset,
        load_eval_data,
        load_run,
        require_test,
    )

    check_label_fraction(label_fraction)
    check_features(features)
    settings = settings or FinetuneSettings()
    settings.check()
    loaded = load_run(run, device)
    splits = load_eval_data(loaded, data, stream=False)  # augmented views need the images
    train = labelled_subset(splits.train, label_fraction, subset_seed)
    test = require_test(splits)
    if settings.flip_p is None:
        settings = replace(settings, flip_p=float(loaded.config.get("flip_p", 0.0)))
    classes = splits.train.classes if data is not None else loaded.meta.get("classes")
    num_classes = len(classes) if classes else None
    scores = finetune(loaded.method, train, test, loaded.transform, settings, features,
                      num_classes, device)
    result: dict[str, Any] = {**scores, "n_train": len(train), "n_test": len(test),
                              "label_fraction": float(label_fraction)}
    if features != "backbone":
        result["features"] = features
    return result
