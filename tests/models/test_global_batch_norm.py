"""GlobalBatchNorm in one process: the same outputs, gradients and running estimates as
nn.BatchNorm (float64, 1e-10); its statistics over several ranks are tested in
tests/distributed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastlab.models.global_batch_norm import GlobalBatchNorm, convert_to_global_batch_norm


def _pair(kind: type[nn.Module], channels: int, **kwargs) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    reference = kind(channels, **kwargs).double()
    if reference.affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.uniform_(-0.5, 0.5)
    converted = convert_to_global_batch_norm(_copy(reference))
    assert isinstance(converted, GlobalBatchNorm)
    return reference, converted


def _copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)


@pytest.mark.parametrize(("kind", "shape"), [(nn.BatchNorm2d, (6, 3, 5, 4)),
                                             (nn.BatchNorm1d, (7, 4)),
                                             (nn.BatchNorm1d, (5, 4, 3))])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
def test_training_mode_matches_batch_norm(kind, shape, momentum, affine) -> None:
    reference, converted = _pair(kind, shape[1], momentum=momentum, affine=affine)
    for step in range(3):
        x = (torch.randn(*shape, dtype=torch.float64) * (step + 1) + step).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        upstream = torch.randn(*shape, dtype=torch.float64)
        out_ref, out = reference(x), converted(x2)
        torch.testing.assert_close(out, out_ref, rtol=0, atol=1e-10)
        (out_ref * upstream).sum().backward()
        (out * upstream).sum().backward()
        torch.testing.assert_close(x2.grad, x.grad, rtol=0, atol=1e-10)
    if affine:
        torch.testing.assert_close(converted.weight.grad, reference.weight.grad, rtol=0,
                                   atol=1e-10)
        torch.testing.assert_close(converted.bias.grad, reference.bias.grad, rtol=0, atol=1e-10)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(converted, name), getattr(reference, name), rtol=0,
                                   atol=1e-12)
    assert int(converted.num_batches_tracked) == int(reference.num_batches_tracked) == 3
    reference.eval()
    converted.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(converted(x), reference(x), rtol=0, atol=1e-12)


def test_running_statistics_switched_off_are_left_alone() -> None:
    reference, converted = _pair(nn.BatchNorm2d, 3)
    for module in (reference, converted):
        module.track_running_stats = False
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(converted(x), reference(x), rtol=0, atol=1e-10)
    assert torch.equal(converted.running_mean, torch.zeros(3, dtype=torch.float64))
    assert int(converted.num_batches_tracked) == 0


def test_conversion_keeps_state_dict_parameters_and_flags() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.Sequential(nn.Flatten(), nn.LazyLinear(3), nn.BatchNorm1d(3)))
    network(torch.randn(2, 1, 5, 5))
    frozen = nn.BatchNorm1d(3, affine=False)
    network.append(frozen)
    network[1].weight.requires_grad_(False)
    network.eval()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    weight = network[1].weight
    convert_to_global_batch_norm(network)
    assert isinstance(network[1], GlobalBatchNorm) and isinstance(network[3][2], GlobalBatchNorm)
    assert isinstance(network[4], GlobalBatchNorm) and network[4].weight is None
    assert network[1].weight is weight and not network[1].weight.requires_grad
    assert not network[1].training
    after = network.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
