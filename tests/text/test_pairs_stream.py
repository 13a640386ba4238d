"""``train-pairs`` streaming image + caption shards (training/pair_stream_data.py,
data/pair_stream.py): every streamed batch pairs each image with its own caption, an epoch holds
every pair once, the batches do not depend on the number of workers, a full-batch run's losses
equal the in-memory path's, a run stopped (or killed) mid-epoch resumes exactly, and bad samples
stop the run naming shard and key or are skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastlab.data.shard_set import find_shard_sets
from contrastlab.data.tokenizer import TextTokenizer, train_tokenizer
from contrastlab.errors import CheckpointError, ConfigError, DataError
from contrastlab.runs.checkpoint import load_checkpoint
from contrastlab.training.pair_settings import resolve_pair_settings
from contrastlab.training.pair_stream_data import StreamedPairs
from contrastlab.training.pair_trainer import fit_pairs
from tests.text.killed_run import kill_after_checkpoint
from tests.text.pair_data import COLOURS, image_bytes, write_shard
from tests.text.test_text_resume import assert_same_tensors
from tests.threads import one_thread

NAMES = list(COLOURS)
MODEL = {"backbone": "convnet-small", "dim": 16, "depth": 1, "heads": 2, "projection_dim": 8,
         "lr": 0.01, "log_every": 1, "device": "cpu", "loader_workers": 0}


def caption(shard: int, i: int) -> str:
    return f"a {NAMES[(shard * 8 + i) % 4]} square number {shard * 8 + i}"


def write_shards(root: Path, shards: int = 3, per_shard: int = 8) -> Path:
    """``shards`` shards of ``per_shard`` samples; sample n has colour n % 4 in its image and its
    caption, and its number in the caption."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        write_shard(root / f"{s:06d}.tar",
                    [(f"k{s}_{i}", image_bytes(COLOURS[NAMES[(s * 8 + i) % 4]], i % 3),
                      caption(s, i)) for i in range(per_shard)])
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("pairs") / "shards")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    texts = [caption(s, i) for s in range(3) for i in range(8)]
    path.write_text(train_tokenizer(texts, vocab_size=60, min_frequency=1).to_json())
    return path


def run(values: dict[str, Any], stop_after_step: int | None = None) -> dict[str, Any]:
    with one_thread():
        result = fit_pairs(resolve_pair_settings(values), stop_after_step=stop_after_step)
    return load_checkpoint(result.run_dir / "checkpoints" / "last.pt")


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().split("\n")
    found = [json.loads(line) for line in lines if line]
    return [r for r in found if r.get("type") == kind]


def losses(out: Path) -> list[tuple[int, float]]:
    return sorted({r["step"]: r["loss"] for r in records(out, "step")}.items())


def open_pairs(shards: Path, tokenizer: Path, workers: int, **overrides: Any) -> StreamedPairs:
    settings = {"image_size": None, "max_length": 16, "vocab_size": 60, "seed": 3, "rank": 0,
                "world": 1, "batch_size": 8, "buffer": 5, "workers": workers,
                "skip_bad_files": False, "tokenizer": TextTokenizer.from_file(tokenizer)}
    found = find_shard_sets(str(shards))
    assert found is not None
    return StreamedPairs(found[0], **{**settings, **overrides})


def decoded_captions(pairs: StreamedPairs, tokens: Any) -> list[str]:
    return [pairs.tokenizer.tokenizer.decode(row[mask].tolist())
            for row, mask in zip(tokens.ids, tokens.mask, strict=True)]


def colour_of(image: torch.Tensor) -> str:
    """The colour whose RGB is closest to the image's mean pixel."""
    mean = image.float().mean(dim=(1, 2))
    return min(NAMES, key=lambda n: float(((mean - torch.tensor(COLOURS[n])) ** 2).sum()))


def test_streamed_batches_pair_each_image_with_its_caption_and_cover_the_epoch(
        shards: Path, tokenizer: Path) -> None:
    pairs = open_pairs(shards, tokenizer, workers=0)
    other = open_pairs(shards, tokenizer, workers=2)
    assert pairs.steps_per_epoch == 3
    epochs = []
    try:
        for epoch in range(2):
            seen = []
            for b in range(3):
                images, tokens = pairs.batch(epoch * 3 + b, lambda _: None)
                images2, tokens2 = other.batch(epoch * 3 + b, lambda _: None)
                assert torch.equal(images, images2) and torch.equal(tokens.ids, tokens2.ids)
                assert images.shape == (8, 3, 8, 8)
                for image, text in zip(images, decoded_captions(pairs, tokens), strict=True):
                    number = int(text.split()[-1])
                    assert text.split()[1] == colour_of(image) == NAMES[number % 4]
                    seen.append(number)
            assert sorted(seen) == list(range(24))  # every pair once per epoch
            epochs.append(seen)
    finally:
        pairs.close()
        other.close()
    assert epochs[0] != epochs[1]  # a new order each epoch
    # a stream opened at a batch within an epoch gives what the epoch gives there
    again = open_pairs(shards, tokenizer, workers=0)
    images, tokens = again.batch(4, lambda _: None)
    assert [int(t.split()[-1]) for t in decoded_captions(again, tokens)] == epochs[1][8:16]


def test_a_full_batch_streamed_run_has_the_in_memory_runs_losses(shards: Path, tokenizer: Path,
                                                                  tmp_path: Path) -> None:
    """One batch of all 24 pairs an epoch: the same pairs in both paths in another order, which
    CLIP's loss and batch norm do not see (augmentations that draw no pixel change: a crop of
    the whole image, no flip; no dropout; float64 weights)."""
    values = {**MODEL, "data": str(shards), "tokenizer": str(tokenizer), "batch_size": 24,
              "epochs": 3, "crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "flip_p": 0.0,
              "dropout": 0.0, "method": "clip"}
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # float32 rounding of another summation order
    try:  # would be amplified by Adam's normalisation of near-zero gradients
        streamed = run({**values, "out": str(tmp_path / "streamed")})
        memory = run({**values, "out": str(tmp_path / "memory"), "stream": "off"})
    finally:
        torch.set_default_dtype(dtype)
    assert records(tmp_path / "streamed", "data")[0]["streamed"] is True
    assert records(tmp_path / "memory", "data")[0]["streamed"] is False
    got, want = losses(tmp_path / "streamed"), losses(tmp_path / "memory")
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3]
    assert torch.allclose(torch.tensor([v for _, v in got]), torch.tensor([v for _, v in want]),
                          rtol=1e-9, atol=0)
    assert len(set(v for _, v in got)) == 3  # it trains
    for key, value in memory["model"].items():
        assert torch.allclose(streamed["model"][key], value, rtol=1e-7, atol=1e-9), key


def test_a_streamed_run_stopped_mid_epoch_resumes_exactly(shards: Path, tokenizer: Path,
                                                          tmp_path: Path) -> None:
    values = {**MODEL, "data": str(shards), "tokenizer": str(tokenizer), "batch_size": 8,
              "epochs": 2, "method": "siglip", "shuffle_buffer": 5}
    straight = run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "stopped"
    run({**values, "out": str(out), "loader_workers": 2}, stop_after_step=4)  # epoch 1, batch 1
    assert load_checkpoint(out / "checkpoints" / "last.pt")["position"]["batch_in_epoch"] == 1
    resumed = run({"resume": True, "out": str(out)})
    assert resumed["stream"] == {"pairs": 24, "shards": 3, "world": 1, "steps_per_epoch": 3,
                                 "shuffle_buffer": 5}
    for key in ("model", "optimizer", "view_generator"):
        assert_same_tensors(resumed[key], straight[key], key)
    assert losses(out) == losses(tmp_path / "straight")
    with pytest.raises(CheckpointError, match="shuffle_buffer=5"):
        resolve_pair_settings({"resume": True, "out": str(out), "shuffle_buffer": 7})


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_exactly(shards: Path, tokenizer: Path,
                                                         tmp_path: Path) -> None:
    """A real ``train-pairs`` process on shards, checkpointing after every step (each write
    paused 0.3 s before its rename), is killed with SIGKILL once a checkpoint of step >= 2
    exists."""
    values = {**MODEL, "data": str(shards), "tokenizer": str(tokenizer), "batch_size": 8,
              "epochs": 2, "method": "clip", "checkpoint_every": 1, "loader_workers": 1}
    straight = run({**values, "out": str(tmp_path / "straight")})
    out = tmp_path / "killed"
    assert kill_after_checkpoint("train-pairs", values, out) < 6, "the run had ended"
    resumed = run({"resume": True, "out": str(out)})
    assert_same_tensors(resumed["model"], straight["model"], "model")
    assert losses(out) == losses(tmp_path / "straight")


def test_a_sample_without_caption_is_named_or_skipped(tmp_path: Path, tokenizer: Path) -> None:
    root = write_shards(tmp_path / "shards", shards=2)
    write_shard(root / "000002.tar", [("nocap", image_bytes(COLOURS["red"]), None)]
                + [(f"x{i}", image_bytes(COLOURS["blue"]), "a blue square number 1")
                   for i in range(3)])
    values = {**MODEL, "data": str(root), "tokenizer": str(tokenizer), "batch_size": 8,
              "out": str(tmp_path / "run")}
    with pytest.raises(DataError, match=r"000002\.tar::nocap: the sample has no \.txt"):
        run(values)
    run({**values, "skip_bad_files": True, "out": str(tmp_path / "skipped")})
    data = records(tmp_path / "skipped", "data")[0]
    assert (data["pairs"], data["skipped_rows"], data["streamed"]) == (19, 1, True)


@pytest.mark.parametrize("bad", ["image", "caption"])
def test_an_unreadable_sample_stops_naming_it_or_is_skipped(
        tmp_path: Path, tokenizer: Path, bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a preview of 4 images: the bad sample is first read by a worker during training
    monkeypatch.setattr("contrastlab.training.pair_stream_data.PREVIEW_IMAGES", 4)
    root = write_shards(tmp_path / "shards", shards=2)
    rows = [(f"g{i}", image_bytes(COLOURS["green"]), "a green square number 2")
            for i in range(7)]
    if bad == "image":
        rows.append(("broken", b"not an image at all", "a red square number 0"))
    else:
        rows.append(("broken", image_bytes(COLOURS["red"]), None))
    write_shard(root / "000002.tar", rows)
    if bad == "caption":  # a .txt member of bytes that are not UTF-8
        import io
        import tarfile

        with tarfile.open(root / "000002.tar", "a") as tar:
            info = tarfile.TarInfo("broken.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"\xff\xfe\xfa"))
    values = {**MODEL, "data": str(root), "tokenizer": str(tokenizer), "batch_size": 8,
              "epochs": 1, "shuffle_buffer": 0}
    with pytest.raises(DataError, match=r"000002\.tar::broken(\.txt)?: .*--skip-bad-files"):
        run({**values, "out": str(tmp_path / "run")})
    out = tmp_path / "skipped"
    run({**values, "out": str(out), "skip_bad_files": True})
    skipped = records(out, "skipped_samples")
    assert [r["count"] for r in skipped] == [1]
    assert "000002.tar::broken" in skipped[0]["samples"][0]
    assert records(out, "data")[0]["skipped_rows"] == 0  # found during training, not before
    assert records(out, "final")[0]["steps"] == 3


def test_stream_settings(tmp_path: Path, shards: Path) -> None:
    from tests.text.pair_data import write_folder

    folder = write_folder(tmp_path / "colours", per_class=2)
    with pytest.raises(ConfigError, match="--stream on needs WebDataset tar shards"):
        run({**MODEL, "data": str(folder), "stream": "on", "batch_size": 4,
             "out": str(tmp_path / "on")})
    run({**MODEL, "data": str(folder), "batch_size": 4, "out": str(tmp_path / "auto")})
    assert records(tmp_path / "auto", "data")[0]["streamed"] is False
