"""Multi-crop forward: one batch per size group, running BN statistics from the global views."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastlab.methods._multi_crop import forward_multi_crop, same_size_groups


def views(batch: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return ([torch.randn(batch, 2, 6, 6, generator=gen) for _ in range(2)]
            + [3 + torch.randn(batch, 2, 3, 3, generator=gen) for _ in range(3)])


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x).mean(dim=(2, 3))


def test_groups_of_consecutive_same_size_views() -> None:
    assert same_size_groups(views()) == [(0, 2), (2, 5)]
    mixed = [torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 4, 4)]
    assert same_size_groups(mixed) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError, match="same images"):
        same_size_groups([torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4)])


def test_each_group_is_one_batch_and_rows_keep_view_order() -> None:
    net = Net().train()
    v = views()
    out = forward_multi_crop(net, v, net)
    reference = Net().train()
    expected = torch.cat([reference(torch.cat(v[:2])), reference(torch.cat(v[2:]))])
    torch.testing.assert_close(out, expected)  # batch statistics per group
    assert out.shape == (20, 2)


def test_running_statistics_come_from_the_global_views_only() -> None:
    net = Net().train()
    v = views()
    forward_multi_crop(net, v, net)
    only_global = Net().train()
    only_global(torch.cat(v[:2]))
    torch.testing.assert_close(net.bn.running_mean, only_global.bn.running_mean)
    torch.testing.assert_close(net.bn.running_var, only_global.bn.running_var)
    assert net.bn.track_running_stats  # restored
    assert int(net.bn.num_batches_tracked) == 1
