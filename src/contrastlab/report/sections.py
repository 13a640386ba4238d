"""Report sections drawn from the run's records alone (metrics.jsonl, config, final metrics).

Each function adds one section to the page; when its data was not recorded it says so and what
to pass next time, instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contrastlab.report.html import HtmlPage
from contrastlab.report.plots import Panel, plot_alignment_uniformity, plot_lines, plot_spectra
from contrastlab.report.records import RunRecords

SPACES = ("projector", "backbone")
ACCURACY_KEYS = {"knn_top1": "kNN top-1", "linear_top1": "linear top-1"}


def final_metrics_rows(final: dict[str, Any]) -> list[list[Any]]:
    """``[[name, value], ...]`` of final metrics; accuracies in percent."""
    rows = []
    for key, value in final.items():
        if key in ("time", "type"):
            continue
        if key.endswith("top1") and isinstance(value, (int, float)):
            rows.append([key, f"{100 * value:.2f}%"])
        else:
            rows.append([key, value])
    return rows


def progress_done(records: RunRecords) -> tuple[float | None, int]:
    """(epochs done, with the fraction of the last one; steps done) from the records."""
    steps = [r["step"] for r in records.records if isinstance(r.get("step"), int)]
    step = max(steps, default=0)
    data = records.of_type("data")
    batch = records.config.get("batch_size")
    if not data or not isinstance(batch, int) or not data[-1].get("n_train"):
        return None, step
    per_epoch = max(1, int(data[-1]["n_train"]) // batch)
    return step / per_epoch, step


def training_length(records: RunRecords) -> str:
    """``0.43 epochs (130 steps) of a 240 s budget`` / ``2 epochs (50 steps) of 100``."""
    epochs, steps = progress_done(records)
    done = f"{epochs:.2f}".rstrip("0").rstrip(".") if epochs is not None else "?"
    budget = records.config.get("time_budget")
    planned = (f"a {budget:.0f} s budget" if isinstance(budget, (int, float))
               else f"{records.config.get('epochs')} planned")
    return f"{done} epochs ({steps} steps) of {planned}"


def why_no_diagnostics(records: RunRecords) -> str:
    """Why a run has no diagnostics records, in words."""
    every = records.config.get("diagnose_every")
    if every == 0:
        return "diagnostics were off for this run (--diagnose-every 0)"
    if not records.final_metrics:
        return (f"the run stopped after {training_length(records)}, before its first diagnosed "
                f"epoch (--diagnose-every {every}: every {every} epochs and at the end)")
    return (f"none were recorded for this run ({training_length(records)}; --diagnose-every "
            f"{every})")


def summary(page: HtmlPage, records: RunRecords) -> None:
    page.section("Summary")
    config = records.config
    page.table(["run", "method", "backbone", "data", "trained", "batch size"], [[
        str(records.root), config.get("method"), config.get("backbone"), config.get("data"),
        training_length(records), config.get("batch_size")]])
    final = records.final_metrics
    if final:
        page.paragraph("Final metrics (held-out split):")
        page.table(["metric", "value"], final_metrics_rows(final))
    else:
        page.missing("No final metrics: the run has not finished, was stopped, or its data has "
                     "no labels.")
    if records.bad_lines:
        page.missing(f"{records.bad_lines} line(s) of metrics.jsonl were not valid JSON and were "
                     "skipped (a run killed while writing).")


def alarms(page: HtmlPage, records: RunRecords) -> None:
    page.section("Collapse alarm")
    raised = records.of_type("alarm")
    if raised:
        for alarm in raised:
            page.alarm(f"epoch {alarm.get('epoch')}: {alarm.get('message')}")
    elif records.of_type("diagnostics"):
        page.paragraph("No collapse alarm: neither complete nor dimensional collapse was seen "
                       "in the diagnosed epochs.", "ok")
    else:
        page.missing(f"No diagnostics, so collapse was not watched: {why_no_diagnostics(records)}. "
                     "`contrastlab diagnose --run RUN` diagnoses the last checkpoint.")


def training_curves(page: HtmlPage, records: RunRecords, out: Path) -> None:
    page.section("Training curves")
    steps = [r for r in records.of_type("step") if r.get("loss") is not None]
    if not steps:
        page.missing("No step records in metrics.jsonl: nothing to plot.")
        return
    x = [r["step"] for r in steps]
    losses = {"logged steps": (x, [r["loss"] for r in steps])}
    epochs = [r for r in records.of_type("epoch") if r.get("loss") is not None]
    if len(epochs) > 1:
        losses["epoch mean"] = ([r["step"] for r in epochs], [r["loss"] for r in epochs])
    panels = [Panel("training loss", "loss", losses)]
    if all("lr" in r for r in steps):
        panels.append(Panel("learning rate", "lr", {"lr": (x, [r["lr"] for r in steps])}))
    page.image(plot_lines(panels, "step", out / "loss_lr.png"), "loss and learning rate")


def accuracy_curves(page: HtmlPage, records: RunRecords, out: Path) -> None:
    page.section("Accuracy during training")
    evals = records.of_type("eval")
    series = {}
    for key, label in ACCURACY_KEYS.items():
        points = [(r["epoch"], 100 * r[key]) for r in evals if r.get(key) is not None]
        if points:
            series[label] = ([p[0] for p in points], [p[1] for p in points])
    if not series:
        page.missing("No evaluation during training was recorded (train with --eval-every N "
                     "to get kNN / linear accuracy per epoch).")
        return
    page.image(plot_lines([Panel("held-out accuracy", "top-1 (%)", series)], "epoch",
                          out / "accuracy.png"), "accuracy per epoch")


def diagnostics(page: HtmlPage, records: RunRecords, out: Path) -> None:
    page.section("Alignment, uniformity and collapse indicators")
    diagnosed = records.of_type("diagnostics")
    if not diagnosed:
        page.missing(f"No diagnostics: {why_no_diagnostics(records)}. `contrastlab diagnose "
                     "--run RUN` diagnoses the last checkpoint.")
        return
    trajectories, rank, std = {}, {}, {}
    for space in SPACES:
        rows = [r for r in diagnosed if isinstance(r.get(space), dict)
                and r[space].get("alignment") is not None]
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        trajectories[space] = (epochs, [r[space]["uniformity"] for r in rows],
                               [r[space]["alignment"] for r in rows])
        rank[space] = (epochs, [r[space]["effective_rank_ratio"] for r in rows])
        std[space] = (epochs, [r[space]["normalized_std_ratio"] for r in rows])
    if not trajectories:
        page.missing("The diagnostics hold no finite values (the model diverged).")
        return
    page.paragraph("Wang & Isola (2020): good representations have low alignment (positive pairs "
                   "close) and low uniformity (embeddings spread over the sphere).")
    page.image(plot_alignment_uniformity(trajectories, out / "alignment_uniformity.png"),
               "alignment against uniformity")
    page.paragraph("Collapse indicators: effective rank (RankMe) over its maximum, and the std of "
                   "L2-normalised embeddings times sqrt(D) (about 1 when spread out, 0 on complete "
                   "collapse). Dashed: the alarm levels.")
    from contrastlab.eval.collapse import CollapseMonitor

    monitor = CollapseMonitor()
    panels = [Panel("effective rank / max rank", "ratio", rank, reference=monitor.threshold_rank,
                    reference_label="dimensional collapse below"),
              Panel("normalised std x sqrt(D)", "ratio", std, reference=monitor.threshold_std,
                    reference_label="complete collapse below")]
    page.image(plot_lines(panels, "epoch", out / "collapse_indicators.png"),
               "collapse indicators per epoch")
    last = diagnosed[-1]
    page.paragraph(f"Last diagnosed epoch ({last.get('epoch')}):")
    keys = ("dim", "alignment", "uniformity", "effective_rank", "normalized_std",
            "positive_cosine", "negative_cosine")
    page.table(["space", *keys], [[space, *(last[space].get(k) for k in keys)]
                                  for space in SPACES if isinstance(last.get(space), dict)])


def spectrum(page: HtmlPage, records: RunRecords, out: Path) -> None:
    page.section("Eigenvalue spectrum")
    diagnosed = [r for r in records.of_type("diagnostics")
                 if any(isinstance(r.get(s), dict) and r[s].get("spectrum") for s in SPACES)]
    if not diagnosed:
        page.missing(f"No spectrum: {why_no_diagnostics(records)}.")
        return
    chosen = [diagnosed[0]] if len(diagnosed) == 1 else [diagnosed[0], diagnosed[-1]]
    spectra = {space: {f"epoch {r['epoch']}": r[space]["spectrum"] for r in chosen
                       if isinstance(r.get(space), dict) and r[space].get("spectrum")}
               for space in SPACES}
    spectra = {space: lines for space, lines in spectra.items() if lines}
    page.paragraph("Eigenvalues of the covariance of L2-normalised embeddings, largest first "
                   "(first 256), at the first and last diagnosed epoch. A steep drop to a long "
                   "tail of tiny eigenvalues is dimensional collapse (Jing et al. 2022).")
    page.image(plot_spectra(spectra, out / "spectrum.png"), "covariance spectrum")


def configuration(page: HtmlPage, records: RunRecords) -> None:
    page.section("Configuration")
    if not records.config:
        page.missing("No config.yaml in the run directory.")
        return
    page.table(["key", "value"], [[k, v] for k, v in records.config.items()])
