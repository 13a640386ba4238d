"""The report's figures (matplotlib, object-oriented API on the Agg canvas: no pyplot state, no
display needed). Every function draws from plain data and saves one PNG to ``path``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

DPI = 110
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")

Series = tuple[Sequence[float], Sequence[float]]


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


@dataclass
class Panel:
    """One line-plot panel: ``{label: (x, y)}`` series, optionally a dashed reference level."""

    title: str
    ylabel: str
    series: dict[str, Series]
    log_y: bool = False
    reference: float | None = None
    reference_label: str = ""


def plot_lines(panels: list[Panel], xlabel: str, path: Path, title: str = "") -> Path:
    """Side-by-side line plots, one per :class:`Panel`."""
    figure = Figure(figsize=(5.2 * len(panels), 3.6))
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for colour, (label, (x, y)) in zip(PALETTE * 10, panel.series.items(), strict=False):
            marker = "o" if len(x) <= 30 else None
            axes.plot(x, y, label=label, color=colour, marker=marker, markersize=3, linewidth=1.4)
        if panel.reference is not None:
            axes.axhline(panel.reference, color="#555555", linestyle="--", linewidth=1,
                         label=panel.reference_label or None)
        if panel.log_y:
            axes.set_yscale("log")
        axes.set_title(panel.title)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs and steps
        axes.set_xlabel(xlabel)
        axes.set_ylabel(panel.ylabel)
        axes.grid(alpha=0.3)
        if len(panel.series) > 1 or panel.reference_label:
            axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_alignment_uniformity(trajectories: dict[str, tuple[list[int], list[float], list[float]]],
                              path: Path) -> Path:
    """Alignment (lower: positives closer) against uniformity (lower: more spread), one line per
    space, epochs marked along it (Wang & Isola 2020, Fig. 5 style). Values: ``{space: (epochs,
    uniformity, alignment)}``."""
    figure = Figure(figsize=(5.6, 4.4))
    axes = figure.add_subplot(1, 1, 1)
    for colour, (space, (epochs, uniform, align)) in zip(PALETTE, trajectories.items(),
                                                         strict=False):
        axes.plot(uniform, align, color=colour, linewidth=1.2, alpha=0.7)
        axes.scatter(uniform, align, c=np.linspace(0.25, 1.0, len(epochs)), cmap="Greys",
                     edgecolors=colour, s=30, zorder=3, label=space)
        for i in sorted({0, len(epochs) - 1}):
            axes.annotate(f"ep {epochs[i]}", (uniform[i], align[i]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points", color=colour)
    axes.set_xlabel("uniformity  log E exp(-2||f(x)-f(y)||²)  (lower: more spread)")
    axes.set_ylabel("alignment  E ||f(x)-f(x')||²  (lower: better)")
    axes.set_title("alignment vs uniformity over training")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_spectra(spectra: dict[str, dict[str, Sequence[float]]], path: Path) -> Path:
    """Covariance eigenvalues, largest first, log scale; one panel per space, one line per
    labelled epoch: ``{space: {label: eigenvalues}}``. Eigenvalues below 1e-10 of the panel's
    largest are round-off (numerically zero) and are drawn at that floor."""
    figure = Figure(figsize=(5.2 * len(spectra), 3.8))
    for index, (space, lines) in enumerate(spectra.items()):
        axes = figure.add_subplot(1, len(spectra), index + 1)
        curves = {label: np.asarray([np.nan if v is None else v for v in values], dtype=float)
                  for label, values in lines.items()}
        largest = max((float(np.nanmax(y)) for y in curves.values() if np.isfinite(y).any()),
                      default=1.0)
        floor = largest * 1e-10 if largest > 0 else 1e-12
        for colour, (label, y) in zip(PALETTE, curves.items(), strict=False):
            axes.plot(np.arange(1, len(y) + 1), np.clip(y, floor, None), label=label,
                      color=colour, linewidth=1.4)
        axes.set_yscale("log")
        axes.set_title(f"{space}: covariance spectrum")
        axes.set_xlabel("eigenvalue index (largest first)")
        axes.set_ylabel("eigenvalue (L2-normalised embeddings)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return _save(figure, path)


def plot_scatter_2d(points: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str],
                    title: str, path: Path) -> Path:
    """A 2-D map of embeddings coloured by label, with a legend of class names."""
    figure = Figure(figsize=(6.4, 5.4))
    axes = figure.add_subplot(1, 1, 1)
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=6, color=PALETTE[0], alpha=0.7)
    else:
        cmap = "tab10" if len(class_names) <= 10 else "tab20"
        scatter = axes.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, s=6, alpha=0.8,
                               vmin=-0.5, vmax=max(len(class_names), int(labels.max()) + 1) - 0.5)
        if 0 < len(class_names) <= 20:
            handles = [axes.scatter([], [], color=scatter.cmap(scatter.norm(i)), s=20, label=name)
                       for i, name in enumerate(class_names)]
            axes.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5),
                        frameon=False)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    return _save(figure, path)


def _resize_nearest(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize to ``size`` x ``size`` (pixels stay sharp), always (H, W, 3)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    rows = np.arange(size) * image.shape[0] // size
    cols = np.arange(size) * image.shape[1] // size
    return image[rows][:, cols]


def plot_image_grid(rows: list[list[np.ndarray]], path: Path, column_titles: Sequence[str] = (),
                    cell_titles: list[list[str]] | None = None,
                    cell_colours: list[list[str]] | None = None, title: str = "",
                    first_column_apart: bool = False) -> Path:
    """A grid of images (each H, W or H, W, 3 in [0, 1]) drawn as one mosaic, pixel-exact
    (nearest-neighbour scaling to a common cell size), with a title above each cell (or above
    each column) and a coloured frame where ``cell_colours`` is not black;
    ``first_column_apart`` leaves a wider gap after the first column (e.g. query | results)."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    largest = max(max(image.shape[:2]) for row in rows for image in row)
    cell = max(largest, 64 // largest * largest)  # small images: scale up by a whole factor
    gap = max(2, cell // 16)
    head = max(8, cell // 4)  # room for a title line
    row_tops = [head + r * (cell + (head if cell_titles else gap)) for r in range(n_rows)]
    col_lefts = [gap + c * (cell + gap) + (3 * gap if first_column_apart and c > 0 else 0)
                 for c in range(n_cols)]
    height, width = row_tops[-1] + cell + gap, col_lefts[-1] + cell + gap
    mosaic = np.ones((height, width, 3))
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            top, left = row_tops[r], col_lefts[c]
            mosaic[top:top + cell, left:left + cell] = np.clip(
                _resize_nearest(image, cell), 0.0, 1.0)
    inches = (1.05 * n_cols + 0.2, 1.05 * n_cols * height / width + (0.35 if title else 0.1))
    figure = Figure(figsize=inches)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0 - (0.3 / inches[1] if title else 0.0)))
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_axis_off()
    for r in range(n_rows):
        for c in range(len(rows[r])):
            top, left = row_tops[r], col_lefts[c]
            if cell_titles:
                text = cell_titles[r][c]
            else:
                text = column_titles[c] if r == 0 and c < len(column_titles) else ""
            colour = cell_colours[r][c] if cell_colours else "black"
            if text:
                axes.text(left + cell / 2, top - head * 0.15, text, ha="center", va="bottom",
                          fontsize=7, color=colour)
            if colour != "black":
                axes.add_patch(Rectangle((left - 0.5, top - 0.5), cell, cell, fill=False,
                                         edgecolor=colour, linewidth=2))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=DPI)
    return path
