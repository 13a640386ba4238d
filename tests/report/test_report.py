"""The HTML report, the comparison and the diagnose command on tiny digits runs."""

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contrastlab.cli import app
from contrastlab.errors import CheckpointError
from contrastlab.eval.run_diagnostics import diagnose_run
from contrastlab.report import comparison_rows, read_runs, write_comparison, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("Summary", "Collapse alarm", "Training curves", "Accuracy during training",
            "Alignment, uniformity and collapse indicators", "Eigenvalue spectrum",
            "Embedding map", "Augmented views", "Nearest neighbours", "Configuration")
IMAGES = ("loss_lr.png", "accuracy.png", "alignment_uniformity.png", "collapse_indicators.png",
          "spectrum.png", "embedding_map.png", "views.png", "neighbours.png")


def references(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.IGNORECASE)


def assert_self_contained(page: str) -> None:
    refs = references(page)
    assert refs, "expected images and anchors"
    outside = [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]
    assert outside == []
    assert "url(" not in page and "@import" not in page and "<script" not in page
    assert "<link" not in page and "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def report(diagnosed_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(diagnosed_run, tmp_path_factory.mktemp("out") / "report")


def test_report_has_every_section_and_image(report: Path) -> None:
    page = report.read_text()
    assert_self_contained(page)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    assert 'class="missing"' not in page  # a complete run misses nothing
    embedded = [r for r in references(page) if r.startswith("data:image/png;base64,")]
    assert len(embedded) == len(IMAGES)
    for name in IMAGES:
        png = (report.parent / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000, name
        assert "data:image/png;base64," + base64.b64encode(png).decode() in page, name
    assert "kNN top-1" in page or "knn_top1" in page
    assert "t-SNE" in page or "UMAP" in page
    assert "No collapse alarm" in page


def test_report_of_a_bare_run_says_what_is_missing(diagnosed_run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(diagnosed_run / "config.yaml", bare / "config.yaml")
    lines = (diagnosed_run / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["type"] == "step"]
    (bare / "metrics.jsonl").write_text("\n".join(kept) + "\n{truncated")
    result = CliRunner().invoke(app, ["report", str(bare), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(bare / "report" / "report.html")  # default folder
    page = (bare / "report" / "report.html").read_text()
    assert_self_contained(page)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    assert page.count('class="missing"') >= 8
    assert "--eval-every" in page and "--diagnose-every" in page
    assert "1 line(s) of metrics.jsonl were not valid JSON" in page
    assert "last.pt" in page  # why the model sections are empty
    assert sorted(p.name for p in (bare / "report").glob("*.png")) == ["loss_lr.png"]


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a run directory"):
        write_report(tmp_path)


def test_compare_two_runs(diagnosed_run: Path, plain_run: Path, tmp_path: Path) -> None:
    runs = read_runs([diagnosed_run, plain_run])
    rows = comparison_rows(runs)
    assert [row[0] for row in rows] == ["diagnosed", "plain"]
    final = json.loads((diagnosed_run / "final_metrics.json").read_text())
    assert rows[0][6] == f"{100 * final['knn_top1']:.2f}%"
    assert rows[0][9] == "none" and rows[1][9] == "-"  # watched and healthy / not watched
    page = write_comparison(runs, tmp_path / "cmp").read_text()
    assert_self_contained(page)
    assert page.count("data:image/png;base64,") == 2
    for name in ("compare_loss.png", "compare_accuracy.png"):
        assert (tmp_path / "cmp" / name).read_bytes().startswith(PNG_MAGIC)
    result = CliRunner().invoke(app, ["compare", str(diagnosed_run), str(plain_run)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "diagnosed" in result.output and f"{100 * final['knn_top1']:.2f}%" in result.output


def test_diagnose_command_prints_one_json_object(diagnosed_run: Path) -> None:
    result = CliRunner().invoke(app, ["diagnose", "--run", str(diagnosed_run), "--images", "300",
                                      "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"run", "data", "epoch", "projector", "backbone", "collapse"} <= set(payload)
    assert payload["epoch"] == 2 and payload["projector"]["n"] == 300
    assert payload["collapse"] == []
    direct = diagnose_run(diagnosed_run, max_images=300)
    assert payload["projector"]["alignment"] == pytest.approx(direct["projector"]["alignment"])
    # the last training epoch diagnosed the same model on the same seeded subset
    last = [json.loads(line) for line in (diagnosed_run / "metrics.jsonl").read_text()
            .splitlines() if '"diagnostics"' in line][-1]
    full = diagnose_run(diagnosed_run)
    assert full["backbone"]["effective_rank"] == pytest.approx(
        last["backbone"]["effective_rank"], rel=1e-4)  # channels_last in training: round-off
    # the top-5 eigenvalue ratio: logged in training, shown by the table
    assert 0 < last["projector"]["top5_eigenvalue_ratio"] <= 1
    assert 0 < last["backbone"]["top5_eigenvalue_ratio"] <= 1
    table = CliRunner().invoke(app, ["diagnose", "--run", str(diagnosed_run), "--images", "300",
                                     "--device", "cpu"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "variance in the 5 largest eigenvalues" in table.output
