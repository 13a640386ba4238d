"""Report sections that need the trained model and the data: a 2-D map of test embeddings, the
augmented views the trainer made, and nearest neighbours.

:func:`load_model_and_data` rebuilds the method from ``RUN/checkpoints/last.pt`` and reloads the
run's data with its own split; when either is missing the sections say why instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contrastlab.data import DatasetSplits, ImageDataset, load_dataset
from contrastlab.errors import ContrastlabError
from contrastlab.eval.features import extract_features
from contrastlab.eval.runs import LoadedRun, load_run
from contrastlab.report.embedding_map import MAX_POINTS, map_2d, subset_indices
from contrastlab.report.html import HtmlPage
from contrastlab.report.plots import plot_image_grid, plot_scatter_2d
from contrastlab.report.samples import (
    augmented_views,
    nearest_neighbours,
    pick_per_class,
    to_display,
)

NEIGHBOURS = 8
QUERIES = 6
MAX_REFERENCE = 20_000  # training images searched for neighbours (a seeded subset beyond this)


@dataclass
class ModelAndData:
    loaded: LoadedRun
    splits: DatasetSplits
    device: torch.device | str

    def features(self, dataset: ImageDataset) -> torch.Tensor:
        """Backbone features (eval transform, eval mode) of ``dataset``."""
        with torch.no_grad():
            return extract_features(self.loaded.method.encode, dataset, self.loaded.transform,
                                    self.device)


def load_model_and_data(run: Path, device: torch.device | str = "cpu"
                        ) -> tuple[ModelAndData | None, str]:
    """The run's model and data, or ``None`` and the reason they could not be loaded."""
    try:
        loaded = load_run(run, device)
        config = loaded.config
        splits = load_dataset(config["data"], test_fraction=config["test_fraction"],
                              split_seed=config["split_seed"],
                              skip_bad_files=config.get("skip_bad_files", False),
                              image_size=config.get("image_size"))
    except ContrastlabError as error:
        return None, str(error)
    if splits.train.channels != loaded.meta["in_channels"]:
        return None, (f"the run's data now has {splits.train.channels}-channel images but the "
                      f"model was trained on {loaded.meta['in_channels']}-channel images")
    return ModelAndData(loaded, splits, device), ""


def _subset(dataset: ImageDataset, indices: np.ndarray) -> ImageDataset:
    if len(indices) == len(dataset):
        return dataset
    return dataset.subset(torch.from_numpy(indices))


def embedding_map(page: HtmlPage, model: ModelAndData | None, reason: str, out: Path,
                  max_points: int = MAX_POINTS) -> None:
    page.section("Embedding map")
    if model is None:
        page.missing(f"Not drawn: {reason}")
        return
    dataset = model.splits.test if model.splits.test is not None else model.splits.train
    which = "test" if model.splits.test is not None else "training (no test split)"
    chosen = _subset(dataset, subset_indices(len(dataset), max_points))
    if len(chosen) < 5:
        page.missing(f"Not drawn: only {len(chosen)} {which} images.")
        return
    points, algorithm = map_2d(model.features(chosen).numpy())
    labels = None if chosen.labels is None else chosen.labels.numpy()
    title = f"{algorithm} of backbone features, {len(chosen)} {which} images"
    page.paragraph(title + (", coloured by label." if labels is not None else "."))
    page.image(plot_scatter_2d(points, labels, chosen.classes or [], title,
                               out / "embedding_map.png"), title)


def views_grid(page: HtmlPage, model: ModelAndData | None, reason: str, out: Path) -> None:
    page.section("Augmented views")
    if model is None:
        page.missing(f"Not drawn: {reason}")
        return
    try:
        rows, titles = augmented_views(model.loaded.config, model.loaded.meta, model.splits.train)
    except ContrastlabError as error:
        page.missing(f"Not drawn: the run's view settings could not be rebuilt ({error}).")
        return
    page.paragraph("A few training images and views drawn by the trainer's own recipe "
                   "(un-normalised for display).")
    page.image(plot_image_grid(rows, out / "views.png", column_titles=titles),
               "augmented views")


def neighbours_grid(page: HtmlPage, model: ModelAndData | None, reason: str, out: Path) -> None:
    page.section("Nearest neighbours")
    if model is None:
        page.missing(f"Not drawn: {reason}")
        return
    train = model.splits.train
    queries_from = model.splits.test if model.splits.test is not None else train
    reference_indices = subset_indices(len(train), MAX_REFERENCE, seed=1)
    reference = _subset(train, reference_indices)
    query_indices = pick_per_class(len(queries_from), queries_from.labels, QUERIES, seed=2)
    queries = queries_from.subset(torch.tensor(query_indices))
    same_set = queries_from is train
    indices, similarity = nearest_neighbours(model.features(queries), model.features(reference),
                                             NEIGHBOURS + int(same_set))
    names = train.classes or []

    def label_name(dataset: ImageDataset, i: int) -> str:
        if dataset.labels is None:
            return ""
        label = int(dataset.labels[i])
        return names[label] if label < len(names) else str(label)

    rows, titles, colours = [], [], []
    for q in range(len(queries)):
        found = indices[q].tolist()
        sims = similarity[q].tolist()
        if same_set:  # the query itself is its own nearest neighbour: drop it
            keep = [j for j, i in enumerate(found) if int(reference_indices[i]) !=
                    query_indices[q]][:NEIGHBOURS]
            found, sims = [found[j] for j in keep], [sims[j] for j in keep]
        query_label = label_name(queries, q)
        images = to_display(torch.cat([queries.images[q:q + 1], reference.images[found]]))
        rows.append(images)
        titles.append([f"query {query_label}".strip()] + [
            f"{label_name(reference, i)} {s:.2f}".strip() for i, s in zip(found, sims,
                                                                           strict=True)])
        colours.append(["black"] + [
            "black" if reference.labels is None or label_name(reference, i) == query_label
            else "#c0392b" for i in found])
    page.paragraph(f"Left: {'test' if not same_set else 'training'} images; right: the "
                   f"{NEIGHBOURS} most similar training images by cosine similarity of backbone "
                   "features (label and similarity above each; red: another label).")
    page.image(plot_image_grid(rows, out / "neighbours.png", cell_titles=titles,
                               cell_colours=colours, first_column_apart=True),
               "nearest neighbours")
