"""Multi-process training equals one process on the whole batch, for every registered method.

One group of 2 and one of 3 gloo processes are spawned (torch imported once per process). In
them every rank first checks the collectives, GlobalBatchNorm and the ghost-group running
estimates (collective_checks.py), then the real trainer (``contrastlab.train``, which finds
the initialised group) trains every method for 3 SGD steps on digits with a global batch of 12,
in float64 (``precision: fp64``); rank 0 writes metrics.jsonl and checkpoints/last.pt. The same
configurations are trained by one process here, meanwhile. The losses of the 3 steps and every
tensor of the model's state (parameters, BN running estimates, queues, centres, EMA teachers)
must agree to 1e-5 (relative above 1). The 2-process group also checks resume under DDP:
3 steps, stop, resume to 6 == 6 steps straight, bit for bit.

Why float64: in float32 the runs agree to about 1e-7 after one step, but rounding differences
(a different summation order over the global batch) are then amplified by the training dynamics
(one process compared with itself under another memory format differs by up to 1e-4 after 3
steps for NNCLR's support set, and a step at lr 0.05 can be 10% off after two): a float32
comparison would test the conditioning of the problem, not the distributed code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config, method_users
from contrastlab.errors import ConfigError
from contrastlab.methods import list_methods
from contrastlab.runs.checkpoint import load_checkpoint
from tests.distributed.process_group import join, start_group

STEPS = 3
GLOBAL_BATCH = 12
QUIET = Console(quiet=True)

#: small heads and queues, given to the methods that take them; freeze_prototypes_steps=1 covers
#: both the frozen (unused parameters under DDP) and the trained prototypes; queues of 24 fill
#: after 2 steps, so step 3 uses them; bn_groups=6 gives MoCo v2 ghost groups that split evenly
#: over 2 and 3 processes
SMALL = {"projection_dim": 16, "projection_hidden_dim": 32, "prediction_hidden_dim": 32,
         "num_prototypes": 32, "queue_size": 24, "freeze_prototypes_steps": 1}

#: (case, method, extra settings): every registered method, plus random triplet mining (which
#: draws from the global random generator) and SupCon with one view per image. MoCo v2's ghost
#: BN groups must split evenly over the processes: one group per process (the reference
#: implementation's shuffling BN), so its case names the world size it is for.
#: GradCache (``micro_batch``) under DDP: each process's micro-batch is its whole share of the
#: batch and batch norm is per process, so one process with micro-batches of the same size sees
#: the same rows in every batch-norm call (running estimates, updated twice per micro-batch and
#: per process under DDP, are not compared; see MICRO_BATCH_SKIPPED).
MICRO_BATCH_METHODS = ("simclr", "supcon", "barlow-twins")
CASES: list[tuple[str, str, dict[str, Any]]] = (
    [(name, name, {"backbone": "vit-micro"} if name == "mae" else {})
     for name in list_methods() if name != "moco-v2"]
    + [("triplet-random", "triplet", {"mining": "none"})]
    + [("supcon-one-view", "supcon", {"num_views": 1})]
    + [(f"moco-v2-{world}", "moco-v2", {"bn_groups": world}) for world in (2, 3)]
    + [(f"{method}-micro-batch-{world}", method,
        {"micro_batch": GLOBAL_BATCH // world, "sync_batchnorm": False})
       for method in MICRO_BATCH_METHODS for world in (2, 3)]
)
#: state entries not compared for the micro-batch cases
MICRO_BATCH_SKIPPED = ("running_mean", "running_var", "num_batches_tracked")


def world_of(case: str) -> int | None:
    """The world size a case is for (its name ends in -W), or None for every world."""
    head, _, tail = case.rpartition("-")
    return int(tail) if head and tail.isdigit() else None


def cases_for(world: int) -> list[str]:
    return [case for case, _, _ in CASES if world_of(case) in (None, world)]


def settings(method: str, out: Path, **extra: Any) -> dict[str, Any]:
    accepted = {name for name, users in method_users().items() if method in users}
    values: dict[str, Any] = {
        "method": method, "data": "digits", "backbone": "convnet-small", "epochs": 1,
        "batch_size": GLOBAL_BATCH, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "warmup_fraction": 0.0, "device": "cpu", "precision": "fp64", "log_every": 1,
        "diagnose_every": 0, "seed": 0, "out": str(out),
    }
    values.update({k: v for k, v in SMALL.items() if k in accepted})
    values.update(extra)
    return values


def run_case(case: str, root: Path, stop: int = STEPS, resume: bool = False,
             folder: str | None = None) -> None:
    _, method, extra = next(c for c in CASES if c[0] == case)
    out = root / (folder or case)
    train(build_config(None, settings(method, out, resume=resume, **extra)), console=QUIET,
          stop_after_step=stop, evaluate_at_end=False)


def _group_worker(rank: int, world: int, root: str, cases: list[str], resume_cases: list[str]
                  ) -> None:
    from tests.distributed.collective_checks import run_all

    run_all(rank, world)
    check_user_errors_stop_every_rank(Path(root))
    for case in cases:
        run_case(case, Path(root))
    for case in resume_cases:
        run_case(case, Path(root), stop=2 * STEPS, folder=f"{case}-straight")
        run_case(case, Path(root), stop=STEPS, folder=f"{case}-resumed")
        run_case(case, Path(root), stop=2 * STEPS, resume=True, folder=f"{case}-resumed")


def check_user_errors_stop_every_rank(root: Path) -> None:
    """A global batch that does not divide over the processes, and a run folder rank 0 cannot
    create, stop every rank with the same error (none waits forever for a peer)."""
    with pytest.raises(ConfigError, match="divide evenly"):
        train(build_config(None, settings("simclr", root / "odd", batch_size=13)),
              console=QUIET, stop_after_step=1, evaluate_at_end=False)
    blocker = root / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable"):
        train(build_config(None, settings("simclr", blocker / "run")), console=QUIET,
              stop_after_step=1, evaluate_at_end=False)


WORLDS = (2, 3)
RESUME_CASES = {2: ["moco-v2-2", "dino"], 3: []}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Run folders: key 1 for the one-process runs of every case, 2 and 3 for the groups.

    Both groups start at once and the one-process runs are made meanwhile: the processes
    spend much of their time waiting for each other in collectives, so sharing the cores
    shortens the wall time."""
    folders = {world: tmp_path_factory.mktemp(f"world-{world}") for world in (1, *WORLDS)}
    groups = [start_group(world, _group_worker, str(folders[world]), cases_for(world),
                          RESUME_CASES[world]) for world in WORLDS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for case, _, _ in CASES:
            run_case(case, folders[1])
    finally:
        torch.set_num_threads(threads)
        for group in groups:
            join(group)
    return folders


def step_losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["type"] == "step"]


def model_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def differences(expected: Path, actual: Path) -> dict[str, float]:
    """Largest |a - b| / max(1, |b|) per compared quantity (losses, each state tensor)."""
    out: dict[str, float] = {}
    losses, reference_losses = step_losses(actual), step_losses(expected)
    assert len(losses) == len(reference_losses) > 0
    out["loss"] = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(losses, reference_losses,
                                                                    strict=True))
    state, reference = model_state(actual), model_state(expected)
    assert state.keys() == reference.keys()
    for key, value in reference.items():
        if "-micro-batch-" in actual.name and key.endswith(MICRO_BATCH_SKIPPED):
            continue
        a, b = state[key].double(), value.double()
        out[key] = float(((a - b).abs() / b.abs().clamp(min=1.0)).max()) if b.numel() else 0.0
    return out


def assert_same_training(expected: Path, actual: Path, case: str) -> None:
    worst = {k: v for k, v in differences(expected, actual).items() if not v <= 1e-5}
    assert not worst, f"{case}: differs from one process by {worst}"


@pytest.mark.slow
@pytest.mark.parametrize("world", WORLDS)
def test_every_method_trains_as_one_process_on_the_whole_batch(
        world: int, runs: dict[int, Path]) -> None:
    failures = []
    for case in cases_for(world):
        try:
            assert_same_training(runs[1] / case, runs[world] / case, case)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("case", RESUME_CASES[2])
def test_resume_under_ddp_continues_identically(case: str, runs: dict[int, Path]) -> None:
    """3 steps, stop, resume to 6 under 2 processes == 6 steps straight, bit for bit."""
    straight, resumed = runs[2] / f"{case}-straight", runs[2] / f"{case}-resumed"
    expected = model_state(straight)
    state = model_state(resumed)
    for key, value in expected.items():
        assert torch.equal(state[key], value), f"{case} resumed under DDP: {key} differs"
    assert step_losses(resumed) == step_losses(straight)
