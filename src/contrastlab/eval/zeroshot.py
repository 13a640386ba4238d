r"""Zero-shot classification with an image-text model: class names as captions.

Radford et al. 2021 (CLIP), Sec. 3.1.4: each class name c is written into prompt templates
("a photo of a {}.") and embedded by the text tower; with several templates the class's
classifier is the mean of the L2-normalised prompt embeddings, normalised again (prompt
ensembling):

.. math::

    w_c = \frac{\bar w_c}{\lVert \bar w_c \rVert}, \qquad
    \bar w_c = \frac{1}{T} \sum_{t=1}^{T}
        \frac{g(\mathrm{template}_t(c))}{\lVert g(\mathrm{template}_t(c)) \rVert}

An image with normalised embedding x is given the class :math:`\arg\max_c w_c^\top x`; top-k
accuracy counts an image as right when its class is among the k largest :math:`w_c^\top x`
(ties by :func:`torch.topk`). Class names are the data's class folder names with ``_`` and
``-`` written as spaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.data.dataset import ImageDataset
from contrastlab.data.image_folder import read_evaluation_images
from contrastlab.data.loader import load_dataset
from contrastlab.errors import ConfigError, DataError
from contrastlab.runs.pair_run import load_pair_run

#: used when no --templates are given: CLIP's default single prompt
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def check_templates(templates: Sequence[str]) -> list[str]:
    """The templates, each with exactly one ``{}`` for the class name."""
    if not templates:
        raise ConfigError("give at least one template, e.g. 'a photo of a {}.'")
    for template in templates:
        if template.count("{}") != 1:
            raise ConfigError(f"template {template!r} must hold '{{}}' exactly once (where the "
                              "class name goes)")
    return list(templates)


def class_name(folder: str) -> str:
    """``golden_retriever`` -> ``golden retriever``."""
    return " ".join(folder.replace("_", " ").replace("-", " ").split())


def zeroshot_weights(embed_texts: Callable[[Sequence[str]], Tensor], classes: Sequence[str],
                     templates: Sequence[str]) -> Tensor:
    """(C, D) classifier: per class, the renormalised mean of its normalised prompt embeddings
    (the module docstring's :math:`w_c`)."""
    templates = check_templates(templates)
    prompts = [template.format(name) for name in classes for template in templates]
    embeddings = F.normalize(embed_texts(prompts).double(), dim=1)
    per_class = embeddings.view(len(classes), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=1).float()


def topk_accuracy(image_embeddings: Tensor, labels: Tensor, weights: Tensor,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """``{k: share of images whose label is among the k classes of largest w_c . x}``
    (k capped at the number of classes)."""
    scores = F.normalize(image_embeddings.float(), dim=1) @ weights.float().t()
    depth = min(max(ks), weights.shape[0])
    top = scores.topk(depth, dim=1).indices
    right = top == labels.view(-1, 1)
    return {k: float(right[:, :min(k, depth)].any(dim=1).float().mean()) for k in ks}


def labelled_images(data: str | Path, image_size: int | None,
                    skip_bad_files: bool = False) -> ImageDataset:
    """The images to classify: for a folder, the official test part of a ``train/`` +
    ``test/`` tree, else every image of its class folders (zero-shot trains on nothing); for
    other sources (archives, CIFAR batches, ...) their test split as ``contrastlab eval`` uses."""
    path = Path(data).expanduser()
    if path.is_dir():
        return read_evaluation_images(path, skip_bad_files=skip_bad_files, image_size=image_size)
    splits = load_dataset(str(data), skip_bad_files=skip_bad_files, image_size=image_size)
    if splits.test is None or splits.test.classes is None:
        raise DataError(f"'{data}' has no classes: zero-shot needs class folders "
                        "(DATA/<class>/*.jpg) whose names become the prompts")
    return splits.test


def evaluate_zeroshot_run(run: str | Path, data: str | Path,
                          templates: Sequence[str] = DEFAULT_TEMPLATES,
                          device: torch.device | str = "cpu",
                          skip_bad_files: bool = False) -> dict[str, Any]:
    """Top-1 / top-5 zero-shot accuracy (x 100) of the image-text run ``run`` on ``data``."""
    templates = check_templates(templates)
    loaded = load_pair_run(run, device)
    images = labelled_images(data, loaded.transform.output_size, skip_bad_files)
    if images.classes is None or images.labels is None:  # pragma: no cover - checked there
        raise DataError(f"'{data}' has no classes")
    names = [class_name(c) for c in images.classes]
    weights = zeroshot_weights(loaded.embed_texts, names, templates)
    accuracy = topk_accuracy(loaded.embed_images(images.images), images.labels, weights)
    return {"zeroshot_top1": 100 * accuracy[1], "zeroshot_top5": 100 * accuracy[5],
            "classes": len(names), "images": len(images), "templates": len(templates)}


__all__ = ["DEFAULT_TEMPLATES", "check_templates", "class_name", "evaluate_zeroshot_run",
           "labelled_images", "topk_accuracy", "zeroshot_weights"]
