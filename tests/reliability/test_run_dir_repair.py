"""What a process killed mid-write leaves in a run directory is tidied on --resume: the stale
temporary checkpoint is removed, and a metrics.jsonl record cut short is closed so that the
records appended next start on a line of their own."""

from __future__ import annotations

import json
from pathlib import Path

from contrastlab.report.records import read_run
from contrastlab.runs import RunDirectory


def killed_run(root: Path) -> RunDirectory:
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "last.pt").write_bytes(b"previous")
    (root / "checkpoints" / ".last.pt.k3j2x1.tmp").write_bytes(b"half written")
    (root / "checkpoints" / "epoch-2.pt").write_bytes(b"kept copy")
    (root / "metrics.jsonl").write_text('{"type": "step", "step": 1}\n{"type": "st')
    return RunDirectory(root)


def test_resume_removes_stale_temporaries_and_closes_a_cut_record(tmp_path: Path) -> None:
    run = killed_run(tmp_path / "run")
    run.prepare(resume=True)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch-2.pt", "last.pt"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == b"previous"
    run.log({"type": "step", "step": 2})
    lines = run.metrics_path.read_text().splitlines()
    assert lines[1] == '{"type": "st' and json.loads(lines[2])["step"] == 2
    records = read_run(run.root)  # the cut record is skipped and counted, the others read
    assert [r["step"] for r in records.records] == [1, 2] and records.bad_lines == 1


def test_a_complete_log_is_left_alone(tmp_path: Path) -> None:
    run = killed_run(tmp_path / "run")
    run.metrics_path.write_text('{"type": "step", "step": 1}\n')
    run.prepare(resume=True)
    assert run.metrics_path.read_text() == '{"type": "step", "step": 1}\n'


def test_a_new_run_does_not_touch_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    stale = root / "checkpoints" / ".last.pt.k3j2x1.tmp"
    stale.write_bytes(b"x")
    RunDirectory(root).prepare(resume=False)
    assert stale.exists()  # only --resume tidies (the folder may belong to a live run otherwise)
