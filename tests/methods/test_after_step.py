"""The after-a-successful-step hook: state that depends on a batch (MoCo v2's queue, NNCLR's
support set, SwAV's queues, DINO's centre) changes only in ``on_step_end(step, progress,
output)``, from that step's ``output.after_step``. A step the trainer skips (non-finite loss or
gradients) never reaches ``on_step_end``, so it changes nothing; nothing is parked on the method
between the two calls; and DistributedDataParallel hands the StepOutput back unchanged."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from contrastlab.methods import build_method
from contrastlab.methods.base import Method, StepOutput


def _views(seed: int, batch: int = 6, local: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return ([torch.randn(batch, 1, 8, 8, generator=generator) for _ in range(2)]
            + [torch.randn(batch, 1, 4, 4, generator=generator) for _ in range(local)])


def _small(name: str) -> Method:
    torch.manual_seed(0)
    options = {
        "moco-v2": {"projection_dim": 8, "projection_hidden_dim": 16, "queue_size": 10},
        "nnclr": {"projection_dim": 8, "projection_hidden_dim": 16, "prediction_hidden_dim": 16,
                  "queue_size": 10},
        "swav": {"projection_dim": 8, "projection_hidden_dim": 16, "num_prototypes": 10,
                 "queue_size": 6},
        "dino": {"projection_dim": 8, "projection_hidden_dim": 16, "num_prototypes": 12},
    }[name]
    return build_method(name, "convnet-small", 1, **options)


def _state(method: Method) -> dict[str, torch.Tensor]:
    """The batch-dependent state: queues, support set, centre."""
    return {key: value.clone() for key, value in method.state_dict().items()
            if key.startswith(("queue.", "queues.", "support.", "criterion.center"))}


def _tensors_kept_outside_state(method: Method) -> list[str]:
    """Tensor attributes of the method's modules that are not parameters or buffers."""
    return [f"{name}.{attribute}" for name, module in method.named_modules()
            for attribute, value in vars(module).items() if isinstance(value, torch.Tensor)]


@pytest.mark.parametrize("name", ["moco-v2", "nnclr", "swav", "dino"])
def test_steps_without_on_step_end_leave_the_state_unchanged(name: str) -> None:
    method = _small(name).train()
    before = _state(method)
    assert before, "no batch-dependent state found"
    outputs = []
    for step in range(2):  # two steps the trainer skipped: training_step, no on_step_end
        method.on_step_start(step, 0.0)
        outputs.append(method.training_step(_views(step, local=2 if name == "dino" else 0), None))
        assert not _tensors_kept_outside_state(method)
    after = _state(method)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(output.after_step for output in outputs)
    assert all(not value.requires_grad for output in outputs
               for value in output.after_step.values())
    method.on_step_end(1, 0.0, outputs[1])  # the step that was taken
    assert any(not torch.equal(_state(method)[key], value) for key, value in before.items())


def test_moco_v2_enqueues_only_the_keys_of_the_step_that_was_taken() -> None:
    method = _small("moco-v2").eval()
    skipped = method.training_step(_views(0, batch=4), None)
    taken = method.training_step(_views(1, batch=4), None)
    method.on_step_end(1, 0.0, taken)
    torch.testing.assert_close(method.queue.ordered(), taken.after_step["keys"])
    assert not torch.equal(skipped.after_step["keys"], taken.after_step["keys"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["moco-v2", "dino"])
def test_ddp_returns_the_step_output_with_its_after_step_tensors(name: str) -> None:
    """One gloo process: DistributedDataParallel (with find_unused_parameters for DINO, as the
    trainer sets it) returns the method's StepOutput object, after_step included."""
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    try:
        method = _small(name).train()
        model = nn.parallel.DistributedDataParallel(
            method, find_unused_parameters=method.unused_parameters)
        method.on_step_start(0, 0.0)
        output = model(_views(0, local=2 if name == "dino" else 0), None)
        assert type(output) is StepOutput
        key = "keys" if name == "moco-v2" else "teacher_output"
        assert output.after_step[key].shape[0] > 0
        output.loss.backward()
        before = _state(method)
        method.on_step_end(0, 0.0, output)
        assert any(not torch.equal(_state(method)[k], v) for k, v in before.items())
    finally:
        dist.destroy_process_group()
