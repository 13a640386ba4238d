"""``contrastlab report RUN``: one self-contained HTML page about a run, with its PNGs beside it.

    OUT/report.html            every image embedded as a data: URI, no external file or link
    OUT/loss_lr.png            training loss and learning rate per step
    OUT/accuracy.png           kNN / linear accuracy per epoch (with --eval-every)
    OUT/alignment_uniformity.png, OUT/collapse_indicators.png, OUT/spectrum.png
                               diagnostics per epoch (with --diagnose-every)
    OUT/embedding_map.png      2-D map (UMAP or t-SNE) of test embeddings coloured by label
    OUT/views.png              augmented views as the trainer made them
    OUT/neighbours.png         nearest training images of a few test images

Sections whose data is missing (no evaluation during training, no checkpoint, data moved) say so.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contrastlab.report import model_sections, sections
from contrastlab.report.embedding_map import MAX_POINTS
from contrastlab.report.html import HtmlPage
from contrastlab.report.records import read_run

REPORT_NAME = "report.html"


def write_report(run: str | Path, out: str | Path | None = None,
                 device: torch.device | str = "cpu", max_points: int = MAX_POINTS) -> Path:
    """Write the report of ``run`` into ``out`` (default ``RUN/report``); returns the HTML path.

    Raises:
        CheckpointError: when ``run`` is not a run directory.
    """
    records = read_run(run)
    folder = Path(out) if out is not None else records.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    config = records.config
    page = HtmlPage(f"contrastlab report: {records.name}",
                    f"{config.get('method', '?')} / {config.get('backbone', '?')} on "
                    f"{config.get('data', '?')}")
    sections.summary(page, records)
    sections.alarms(page, records)
    sections.training_curves(page, records, folder)
    sections.accuracy_curves(page, records, folder)
    sections.diagnostics(page, records, folder)
    sections.spectrum(page, records, folder)
    model, reason = model_sections.load_model_and_data(records.root, device)
    model_sections.embedding_map(page, model, reason, folder, max_points)
    model_sections.views_grid(page, model, reason, folder)
    model_sections.neighbours_grid(page, model, reason, folder)
    sections.configuration(page, records)
    return page.write(folder / REPORT_NAME)
