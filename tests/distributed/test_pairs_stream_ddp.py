"""``train-pairs`` streaming shards under 2 gloo processes: each rank reads its own shards.

* A global batch of all 32 pairs (4 shards of 8; each rank streams its 2 shards, 16 pairs, one
  step an epoch) gives the losses and weights of one process on the same pairs in memory: the
  global batch holds the same pairs in another order, which CLIP's loss (gathered over the
  ranks) and the global batch norm do not see (augmentations that change no pixel, no dropout,
  float64 weights).
* A 2-process streamed run stopped mid-epoch and resumed under 2 processes ends bit for bit like
  the uninterrupted one; resuming it in one process is refused (another stream), and so are
  fewer shards than processes, on every rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contrastlab.errors import CheckpointError, DataError
from contrastlab.runs.checkpoint import load_checkpoint
from contrastlab.training.pair_settings import resolve_pair_settings
from contrastlab.training.pair_trainer import fit_pairs
from tests.distributed.process_group import join, start_group
from tests.distributed.test_small_loops_ddp import one_thread_float64
from tests.text.test_pairs_stream import caption, write_shards
from tests.text.test_text_resume import assert_same_tensors

MODEL = {"backbone": "convnet-small", "dim": 16, "depth": 1, "heads": 2, "projection_dim": 8,
         "lr": 0.01, "log_every": 1, "device": "cpu", "loader_workers": 0, "dropout": 0.0,
         "method": "clip"}
FULL = {**MODEL, "batch_size": 32, "epochs": 3, "crop_scale": [1.0, 1.0],
        "crop_ratio": [1.0, 1.0], "flip_p": 0.0}
RESUME = {**MODEL, "batch_size": 8, "epochs": 2, "method": "siglip"}


def _group_worker(rank: int, world: int, root: str, data: dict[str, str]) -> None:
    torch.set_default_dtype(torch.float64)
    base = Path(root)
    given = {"data": data["shards"], "tokenizer": data["tokenizer"]}
    with pytest.raises(DataError, match="1 shard.* cannot be shared by 2 processes"):
        fit_pairs(resolve_pair_settings({**RESUME, **given, "data": data["one_shard"],
                                         "out": str(base / "refused")}))
    fit_pairs(resolve_pair_settings({**FULL, **given, "out": str(base / "full")}))
    fit_pairs(resolve_pair_settings({**RESUME, **given, "out": str(base / "straight")}))
    fit_pairs(resolve_pair_settings({**RESUME, **given, "out": str(base / "resumed")}),
              stop_after_step=3)
    fit_pairs(resolve_pair_settings({"resume": True, "out": str(base / "resumed")}))


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r["type"] == "step"]


@pytest.mark.slow
def test_streamed_pairs_under_two_processes(tmp_path: Path) -> None:
    from contrastlab.data.tokenizer import train_tokenizer
    from tests.text.pair_data import COLOURS, image_bytes, write_shard

    shards = write_shards(tmp_path / "shards", shards=4)
    one = tmp_path / "one"
    one.mkdir()
    write_shard(one / "000000.tar", [(f"k{i}", image_bytes(COLOURS["red"]), "a red square")
                                     for i in range(8)])
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(train_tokenizer([caption(s, i) for s in range(4) for i in range(8)],
                                         vocab_size=70, min_frequency=1).to_json())
    data = {"shards": str(shards), "one_shard": str(one), "tokenizer": str(tokenizer)}
    group = tmp_path / "group"
    context = start_group(2, _group_worker, str(group), data)
    try:
        with one_thread_float64():
            fit_pairs(resolve_pair_settings({**FULL, "tokenizer": data["tokenizer"],
                                             "data": str(shards), "stream": "off",
                                             "out": str(tmp_path / "memory")}))
    finally:
        join(context)

    assert losses(group / "full") == pytest.approx(losses(tmp_path / "memory"), rel=1e-9)
    full = load_checkpoint(group / "full" / "checkpoints" / "last.pt")
    memory = load_checkpoint(tmp_path / "memory" / "checkpoints" / "last.pt")
    assert full["stream"]["world"] == 2 and full["stream"]["steps_per_epoch"] == 1
    for name, value in memory["model"].items():
        if value.is_floating_point():
            assert torch.allclose(full["model"][name], value, rtol=1e-7, atol=1e-9), name

    straight = load_checkpoint(group / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(group / "resumed" / "checkpoints" / "last.pt")
    assert straight["stream"]["steps_per_epoch"] == 4  # 16 pairs a rank, 4 a step
    for key in ("model", "optimizer", "view_generator", "rank_rng"):
        assert_same_tensors(resumed[key], straight[key], key)
    assert losses(group / "resumed") == losses(group / "straight")
    with pytest.raises(CheckpointError, match="2 processes.*this run has 1"):
        fit_pairs(resolve_pair_settings({"resume": True, "out": str(group / "straight")}))
