"""The README's Python snippet runs as written (so it cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python snippet"
    from contrastlab.data import load_dataset

    monkeypatch.chdir(tmp_path)
    images = load_dataset("digits").test.images[:5]
    namespace = {"images": images}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["embeddings"].shape[0] == 5
    assert set(namespace["result"].metrics) >= {"knn_top1", "linear_top1"}
    assert (tmp_path / "runs" / "demo" / "config.yaml").is_file()
