"""``train-pairs`` and ``train-text`` under 2 processes equal one process on the whole batch.

A group of 2 gloo processes is spawned; in it every rank runs the real loops (``fit_pairs``,
``fit_text``, which find the initialised group) on tiny data with a global batch of 8, while
this process trains the same settings alone. Nothing random differs between the two: the text
encoder's dropout and token drop are 0, and the image augmentations draw the global batch's
parameters from the shared generator in both (each rank applies its slice). The per-step losses
(averaged over the ranks) and every tensor of the final weights and AdamW state must agree to
1e-9 (relative to the tensor's largest entry, at least 1). The weights are float64
(``torch.set_default_dtype``; the images are converted to the weights' dtype): in float32 the
two runs sum the batch in another order, and with batch norm and Adam (which moves a parameter
whose gradient is zero in exact arithmetic, an attention key's bias, by lr times the sign of
the rounding noise) that alone makes them differ by up to 1e-2 after 2 steps, as
test_ddp_every_method.py explains for the image trainer. Measured: losses 2e-15, weights
5e-12 (SimCSE) to 4e-11 (CLIP), optimiser state 2e-14 or better. CLIP and
SigLIP on pairs (with augmentations), unsupervised and supervised SimCSE (with hard negatives)
on a Transformer are covered.

In the same group: a 1-process run stopped after 3 steps continues under 2 processes; resume
under 2 processes, with dropout and token drop on (per-rank random
streams, each rank's saved and restored), ends bit for bit like the uninterrupted 2-process run;
the n-gram backbone and CoSENT are refused under torchrun, and a global batch that does not
divide over the processes stops every rank with the same error.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastlab.data.tokenizer import train_tokenizer
from contrastlab.errors import ConfigError
from contrastlab.runs.checkpoint import load_checkpoint
from contrastlab.training.pair_settings import resolve_pair_settings
from contrastlab.training.pair_trainer import fit_pairs
from contrastlab.training.text_settings import resolve_text_settings
from contrastlab.training.text_trainer import fit_text
from tests.distributed.process_group import join, start_group
from tests.text.pair_data import COLOURS, write_folder

SENTENCES = ["a man plays a guitar", "a woman cuts an onion", "two dogs run in a park",
             "a cat sleeps on a sofa", "a child rides a bike", "the sun sets over the sea",
             "a chef cooks pasta", "people dance at a party", "a bird sings on a branch",
             "an old car drives down a road", "a boy reads a book", "rain falls on the city",
             "a girl paints a wall", "the train leaves the station", "fish swim in a tank",
             "a farmer feeds the cows"]
COMMON = {"dim": 16, "depth": 1, "heads": 2, "dropout": 0.0, "batch_size": 8, "lr": 0.01,
          "log_every": 1, "device": "cpu", "seed": 3}
TEXT = {**COMMON, "token_drop": 0.0, "epochs": 1}
#: 16 pairs (4 colours x 4 shades): 2 steps an epoch; the default augmentations are on
PAIRS = {**COMMON, "backbone": "convnet-small", "projection_dim": 8, "epochs": 1}
#: (case, loop, settings beyond the data's)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("clip", "pairs", {"method": "clip"}),
    ("siglip", "pairs", {"method": "siglip"}),
    ("simcse-unsupervised", "text", {}),
    ("simcse-supervised", "text", {"supervised": True}),
]
RESUME = {**TEXT, "dropout": 0.1, "token_drop": 0.2, "epochs": 3}


def write_data(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    folder = write_folder(root / "colours", per_class=4)
    tokenizer = root / "tokenizer.json"
    tokenizer.write_text(train_tokenizer([f"a {c} square" for c in COLOURS] + SENTENCES,
                                         vocab_size=80, min_frequency=1).to_json())
    sentences = root / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n")
    pairs = root / "pairs.tsv"  # anchor, positive, hard negative
    pairs.write_text("sentence1\tsentence2\tnegative\n" + "".join(
        f"{SENTENCES[i]}\t{SENTENCES[(i + 1) % 16]}\t{SENTENCES[(i + 5) % 16]}\n"
        for i in range(16)))
    return {"folder": str(folder), "tokenizer": str(tokenizer), "sentences": str(sentences),
            "pairs": str(pairs)}


def run_case(case: str, data: dict[str, str], out: Path) -> None:
    _, loop, extra = next(c for c in CASES if c[0] == case)
    if loop == "pairs":
        fit_pairs(resolve_pair_settings({**PAIRS, **extra, "data": data["folder"],
                                         "tokenizer": data["tokenizer"], "out": str(out)}))
        return
    source = data["pairs"] if extra.get("supervised") else data["sentences"]
    fit_text(resolve_text_settings({**TEXT, **extra, "data": source,
                                    "tokenizer": data["tokenizer"], "out": str(out)}))


def _group_worker(rank: int, world: int, root: str, data: dict[str, str]) -> None:
    torch.set_default_dtype(torch.float64)  # this spawned process's own setting
    base = Path(root)
    check_refusals(base, data)
    for case, _, _ in CASES:
        run_case(case, data, base / case)
    resume_values = {**RESUME, "data": data["sentences"], "tokenizer": data["tokenizer"]}
    fit_text(resolve_text_settings({**resume_values, "out": str(base / "straight")}))
    stopped = {**resume_values, "out": str(base / "resumed"), "checkpoint_every": 1}
    fit_text(resolve_text_settings(stopped), stop_after_step=3)
    fit_text(resolve_text_settings({"resume": True, "out": str(base / "resumed")}))
    fit_text(resolve_text_settings({"resume": True, "out": str(base / "from-one")}))


def check_refusals(root: Path, data: dict[str, str]) -> None:
    """Refused on every rank with the reason (no rank waits for a peer that stopped)."""
    values = {**TEXT, "data": data["sentences"], "out": str(root / "refused")}
    with pytest.raises(ConfigError, match="torchrun.*sparse gradients"):
        fit_text(resolve_text_settings({**values, "text_backbone": "ngrams", "buckets": 64,
                                        "dim": 8}))
    with pytest.raises(ConfigError, match="torchrun.*CoSENT"):
        fit_text(resolve_text_settings({**values, "data": data["pairs"], "supervised": True,
                                        "supervised_loss": "cosent"}))
    with pytest.raises(ConfigError, match="divide evenly"):
        fit_pairs(resolve_pair_settings({**PAIRS, "method": "clip", "batch_size": 7,
                                         "data": data["folder"], "tokenizer": data["tokenizer"],
                                         "out": str(root / "odd")}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Run folders of the 2-process group (key 2) and of this process (key 1), made meanwhile."""
    folders = {world: tmp_path_factory.mktemp(f"loops-{world}") for world in (1, 2)}
    # one copy of the data for both (the tokenizer's ids are those of one training of it)
    data = write_data(tmp_path_factory.mktemp("data"))
    # a run of one process, stopped, that the group continues
    with one_thread_float64():
        fit_text(resolve_text_settings({**RESUME, "data": data["sentences"],
                                        "tokenizer": data["tokenizer"],
                                        "out": str(folders[2] / "from-one")}),
                 stop_after_step=3)
    group = start_group(2, _group_worker, str(folders[2]), data)
    try:
        with one_thread_float64():
            for case, _, _ in CASES:
                run_case(case, data, folders[1] / case)
    finally:
        join(group)
    return folders


@contextlib.contextmanager
def one_thread_float64() -> Iterator[None]:
    """Train here as in the group (one thread, float64 weights); restore both settings."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)


def step_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "step"]


#: largest |a - b| over a tensor, in units of its largest |b| (at least 1); see the module doc
TOLERANCE = 1e-9


def scaled_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if not expected.numel():
        return 0.0
    a, b = actual.double(), expected.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1.0))


def flat_tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of nested dicts / lists, by path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list | tuple) else ())
    out: dict[str, torch.Tensor] = {}
    for key, item in items:
        out.update(flat_tensors(item, f"{prefix}/{key}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", [case for case, _, _ in CASES])
def test_two_processes_train_like_one_on_the_whole_batch(case: str,
                                                         runs: dict[int, Path]) -> None:
    expected, actual = runs[1] / case, runs[2] / case
    assert step_losses(actual) == pytest.approx(step_losses(expected), rel=TOLERANCE)
    assert len(step_losses(actual)) == 2  # 16 examples, global batch 8
    want = load_checkpoint(expected / "checkpoints" / "last.pt")
    got = load_checkpoint(actual / "checkpoints" / "last.pt")
    for key in ("epoch", "batch_in_epoch", "step", "epoch_losses"):
        assert got["position"][key] == want["position"][key], key
    assert len(got["rank_rng"]) == 2 and "rank_rng" not in want
    for part in ("model", "optimizer"):
        tensors, reference = flat_tensors(got[part]), flat_tensors(want[part])
        assert tensors.keys() == reference.keys() and reference
        worst = {key: scaled_difference(tensors[key], value) for key, value in reference.items()}
        assert not {k: v for k, v in worst.items() if not v <= TOLERANCE}, (case, part, worst)
    assert (actual / "config.yaml").is_file() and (actual / "tokenizer.json").is_file()


@pytest.mark.slow
def test_resume_under_two_processes_continues_identically(runs: dict[int, Path]) -> None:
    """With dropout and token drop drawn per rank: 3 steps, stop, resume == straight."""
    straight = load_checkpoint(runs[2] / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(runs[2] / "resumed" / "checkpoints" / "last.pt")
    assert resumed["position"]["step"] == straight["position"]["step"] == 6
    for part in ("model", "optimizer", "rank_rng"):
        tensors, reference = flat_tensors(resumed[part]), flat_tensors(straight[part])
        assert tensors.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(tensors[key], value), f"resumed under 2 processes: {part}{key}"
    assert step_losses(runs[2] / "resumed") == step_losses(runs[2] / "straight")
    ranks = straight["rank_rng"]
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # per-rank dropout streams


@pytest.mark.slow
def test_a_one_process_run_continues_under_two(runs: dict[int, Path]) -> None:
    """Rank 0 takes the run's random state back, rank 1 a fresh stream of (seed, rank, step);
    the next checkpoint holds both ranks' states."""
    resumed = load_checkpoint(runs[2] / "from-one" / "checkpoints" / "last.pt")
    assert resumed["position"]["step"] == 6 and len(resumed["rank_rng"]) == 2
    assert [r["step"] for r in map(json.loads, (runs[2] / "from-one" / "metrics.jsonl")
                                   .read_text().splitlines())
            if r["type"] == "step"] == [1, 2, 3, 4, 5, 6]
