"""Shuffling BN (MoCo Sec. 3.3): the batch-statistics group of every key differs from, and mixes
beyond, the group of its query; the shuffle is undone exactly; the DDP path equals one process."""

import math
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastlab.models.shuffle_bn import (
    effective_groups,
    forward_in_groups,
    group_sizes,
    key_shuffle,
    shuffled_forward,
)


def membership(total: int):
    """An 'encoder' whose output row for a sample is the indicator of the samples in its forward
    call, i.e. of the BN group whose statistics would normalise it. Inputs are sample ids."""

    def fn(ids: torch.Tensor) -> torch.Tensor:
        row = torch.zeros(total)
        row[ids.long().flatten()] = 1.0
        return row.expand(ids.shape[0], total).clone()

    return fn


@pytest.mark.parametrize("sizes", [[4, 4], [3, 3, 3, 3], [17, 16, 16, 16], [2, 2, 2, 2, 2, 2],
                                   [8, 8, 8, 8, 8, 8, 8, 8]])
def test_key_shuffle_deals_round_robin_over_query_groups(sizes: list[int]) -> None:
    sigma = key_shuffle(sizes, torch.Generator().manual_seed(0))
    total = sum(sizes)
    assert sorted(sigma.tolist()) == list(range(total))
    group_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    dealt_groups = group_of[sigma]
    assert bool((dealt_groups[1:] != dealt_groups[:-1]).all())  # neighbours differ in group
    start = 0
    for size in sizes:  # key groups have the query groups' sizes
        members = dealt_groups[start:start + size]
        start += size
        counts = torch.bincount(members, minlength=len(sizes))
        assert int((counts > 0).sum()) >= min(2, size)
        assert int(counts.max()) <= math.ceil(size / len(sizes)) + 1


@pytest.mark.parametrize("batch,groups", [(16, 4), (13, 4), (8, 2), (64, 4), (6, 8)])
def test_key_group_excludes_its_query_group(batch: int, groups: int) -> None:
    ids = torch.arange(batch, dtype=torch.float32).unsqueeze(1)
    used = effective_groups(batch, groups)
    assert used >= 2
    query_groups = forward_in_groups(membership(batch), ids, used)
    key_groups, everything = shuffled_forward(membership(batch), ids, groups,
                                              torch.Generator().manual_seed(3))
    torch.testing.assert_close(key_groups, everything)  # one process: local = global
    for i in range(batch):
        query, key = query_groups[i].bool(), key_groups[i].bool()
        assert query[i] and key[i]  # each sample is in its own groups
        assert not torch.equal(query, key), f"sample {i}: key and query share a BN group"
        overlap = int((query & key).sum())
        assert overlap <= math.ceil(int(key.sum()) / used) + 1
    # groups partition the batch, with the sizes tensor_split gives
    assert sorted(int(r.sum()) for r in query_groups.unique(dim=0)) == sorted(
        group_sizes(batch, used))


def test_unshuffle_restores_input_order_and_tiny_batches_fall_back() -> None:
    torch.manual_seed(0)
    x = torch.randn(10, 5)
    linear = nn.Linear(5, 3)
    local, everything = shuffled_forward(linear, x, 4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(local, linear(x))
    torch.testing.assert_close(everything, linear(x))
    assert effective_groups(3, 4) == 1
    small = torch.randn(3, 5)
    torch.testing.assert_close(shuffled_forward(linear, small, 4, torch.Generator())[0],
                               linear(small))


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()).train()


def test_keys_use_the_statistics_of_their_shuffled_group() -> None:
    images = torch.randn(12, 1, 6, 6)
    encoder = _encoder()
    with torch.no_grad():
        keys, _ = shuffled_forward(encoder, images, 3, torch.Generator().manual_seed(7))
        sigma = key_shuffle(group_sizes(12, 3), torch.Generator().manual_seed(7))
        for chunk in sigma.tensor_split(3):
            torch.testing.assert_close(keys[chunk], encoder(images[chunk]))
        assert not torch.allclose(keys, encoder(images))  # not the whole-batch statistics


WORKER = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from contrastlab.models.shuffle_bn import shuffled_forward

    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten()).train()
    images = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    local, everything = shuffled_forward(encoder, images[rank * 8:(rank + 1) * 8], 2,
                                         torch.Generator().manual_seed(5))
    torch.save({"local": local, "everything": everything}, out)
    dist.destroy_process_group()
""")


@pytest.mark.slow
@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_gloo_available()), reason="no gloo backend")
def test_two_process_ddp_path_equals_one_process_with_as_many_groups(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = [tmp_path / f"rank{r}.pt" for r in range(2)]
    workers = [subprocess.Popen([sys.executable, str(script), str(r), str(port), str(outs[r])])
               for r in range(2)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    encoder = _encoder()
    images = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        local, everything = shuffled_forward(encoder, images, 4,
                                             torch.Generator().manual_seed(5))
    for r, path in enumerate(outs):
        result = torch.load(path, weights_only=True)
        torch.testing.assert_close(result["everything"], everything)
        torch.testing.assert_close(result["local"], local[r * 8:(r + 1) * 8])
