"""``train-pairs --text-backbone hf:PATH`` under torchrun trains like one process on the whole
batch: a group of 2 gloo processes against this process, on the tiny BERT of
tests/text/hf_model.py with its dropout set to 0 (dropout masks are drawn per rank, as for the
Transformer tower), locked and unlocked.

The model is float32 (the folder's weights are loaded in float32), so the tolerance is float32's:
the largest difference, relative to the tensor's largest entry (at least 1), under 2e-5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from contrastlab.runs.checkpoint import load_checkpoint  # noqa: E402
from contrastlab.training.pair_settings import resolve_pair_settings  # noqa: E402
from contrastlab.training.pair_trainer import fit_pairs  # noqa: E402
from tests.distributed.process_group import join, start_group  # noqa: E402
from tests.distributed.test_small_loops_ddp import (  # noqa: E402
    flat_tensors,
    scaled_difference,
    step_losses,
)
from tests.text.hf_model import write_tiny_bert  # noqa: E402
from tests.text.pair_data import write_folder  # noqa: E402

#: 16 pairs, global batch 8: 2 steps; the default augmentations are on
PAIRS = {"backbone": "convnet-small", "projection_dim": 8, "batch_size": 8, "lr": 1e-3,
         "log_every": 1, "device": "cpu", "seed": 3, "epochs": 1}
CASES: dict[str, dict[str, Any]] = {"locked": {"method": "clip", "lock_text": True},
                                    "unlocked": {"method": "siglip"}}
TOLERANCE = 2e-5


def write_data(root: Path) -> dict[str, str]:
    folder = write_tiny_bert(root / "tiny-bert")
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return {"model": str(folder), "pairs": str(write_folder(root / "colours", per_class=4))}


def run_cases(root: Path, data: dict[str, str]) -> None:
    for case, extra in CASES.items():
        fit_pairs(resolve_pair_settings({**PAIRS, **extra, "data": data["pairs"],
                                         "text_backbone": f"hf:{data['model']}",
                                         "out": str(root / case)}))


def _group_worker(rank: int, world: int, root: str, data: dict[str, str]) -> None:
    run_cases(Path(root), data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folders = {world: tmp_path_factory.mktemp(f"hf-pairs-{world}") for world in (1, 2)}
    data = write_data(tmp_path_factory.mktemp("hf-pairs-data"))
    group = start_group(2, _group_worker, str(folders[2]), data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_cases(folders[1], data)
    finally:
        torch.set_num_threads(threads)
        join(group)
    return folders


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_an_hf_tower_like_one(case: str, runs: dict[int, Path]) -> None:
    expected, actual = runs[1] / case, runs[2] / case
    assert step_losses(actual) == pytest.approx(step_losses(expected), rel=TOLERANCE)
    assert len(step_losses(actual)) == 2
    want = load_checkpoint(expected / "checkpoints" / "last.pt")
    got = load_checkpoint(actual / "checkpoints" / "last.pt")
    assert len(got["rank_rng"]) == 2 and set(got["hf_files"]) == set(want["hf_files"])
    for part in ("model", "optimizer"):
        tensors, reference = flat_tensors(got[part]), flat_tensors(want[part])
        assert tensors.keys() == reference.keys() and reference
        worst = {key: scaled_difference(tensors[key], value) for key, value in reference.items()}
        assert not {k: v for k, v in worst.items() if not v <= TOLERANCE}, (case, part, worst)
    text = [k for k in want["model"] if k.startswith("tower_b.encoder.model.")]
    assert text
    if case == "locked":  # the locked tower is the folder's on every rank
        from transformers import AutoModel

        folder = want["hf_source"]["path"]
        reference = AutoModel.from_pretrained(folder, local_files_only=True).state_dict()
        for key in text:
            assert torch.equal(got["model"][key],
                               reference[key[len("tower_b.encoder.model."):]]), key
