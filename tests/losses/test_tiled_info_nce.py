"""Tiled (memory-efficient) InfoNCE against direct N x N implementations of each paper's formula.

The references below build the full logit matrix and apply the formula as written: SimCLR
Algorithm 1 (NT-Xent), Khosla et al. 2020 eq. 2 (SupCon L_out), MoCo Algorithm 1 and CLIP's
Figure 3. Each family's function tiles when given a ``chunk_size``; tile sizes are chosen not to
divide N so that ragged last tiles are exercised. The ``*_rows`` forms are the per-process form
of the gathered losses.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from contrastlab.errors import ConfigError
from contrastlab.losses import (
    NTXentLoss,
    clip_loss,
    clip_loss_rows,
    info_nce_loss,
    nt_xent,
    nt_xent_rows,
    queue_info_nce,
    supcon_loss_views,
    supcon_rows,
    tiled_logsumexp,
    tiled_nt_xent,
)
from contrastlab.losses.tiled import auto_chunk_size
from tests.threads import one_thread


@pytest.fixture(autouse=True, scope="module")
def one_thread_here() -> Iterator[None]:
    """Small tiles mean many small matmuls; with 2 MKL threads on an oversubscribed CPU each
    one can wait milliseconds for the second thread. The numerics do not depend on it."""
    with one_thread():
        yield


# ----------------------------------------------------------------------------- direct formulas


def direct_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """l(i, j) = -log exp(s_ij/tau) / sum_{k != i} exp(s_ik/tau), mean over the 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n2 = z.shape[0]
    logits = z @ z.T / tau
    not_self = ~torch.eye(n2, dtype=torch.bool)
    denominator = torch.logsumexp(logits.masked_fill(~not_self, float("-inf")), dim=1)
    partner = torch.arange(n2).roll(n2 // 2)
    return (denominator - logits[torch.arange(n2), partner]).mean()


def direct_supcon(z: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Khosla et al. eq. 2: l_i = -1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(z_i.z_a/tau)_p."""
    z = F.normalize(z, dim=1)
    m = z.shape[0]
    logits = z @ z.T / tau
    self_mask = torch.eye(m, dtype=torch.bool)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1,
                                        keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    losses = []
    for i in range(m):
        if positives[i].any():
            losses.append(-log_prob[i][positives[i]].mean())
    return torch.stack(losses).mean()


def direct_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo Algorithm 1: logits = [q.k+, q.queue] / tau, cross-entropy with label 0."""
    q, k, queue = (F.normalize(t, dim=1) for t in (q, k, queue))
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.T
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def direct_clip(images: torch.Tensor, texts: torch.Tensor, scale) -> torch.Tensor:
    """CLIP Figure 3: symmetric cross-entropy over scale * I_e @ T_e^T with labels arange(N)."""
    logits = F.normalize(images, dim=1) @ F.normalize(texts, dim=1).T * scale
    labels = torch.arange(images.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def leaves(*shapes: tuple[int, ...], dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, dtype=dtype, generator=generator).requires_grad_() for s in shapes]


DTYPES = [torch.float32, torch.float64]

# ----------------------------------------------------------------------------- forms (a)-(d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d,tau,chunk", [(2, 3, 0.5, 1), (19, 8, 0.1, 5), (50, 16, 0.07, 33),
                                           (7, 4, 1.0, 1000)])
def test_nt_xent_matches_direct_and_library(n, d, tau, chunk, dtype) -> None:
    z1, z2 = leaves((n, d), (n, d), dtype=dtype, seed=n)
    ours = tiled_nt_xent(z1, z2, tau, chunk_size=chunk)
    for reference in (direct_nt_xent(z1, z2, tau), nt_xent(z1, z2, tau)):
        close(ours, reference, dtype)
        for a, b in zip(torch.autograd.grad(ours, (z1, z2), retain_graph=True),
                        torch.autograd.grad(reference, (z1, z2)), strict=True):
            close(a, b, dtype)


def test_nt_xent_4096_pairs_float32_matches_direct() -> None:
    """8,192 views, tiles of 1,000 (not a divisor): value and gradients within 1e-5."""
    z1, z2 = leaves((4096, 32), (4096, 32), dtype=torch.float32, seed=4096)
    ours = tiled_nt_xent(z1, z2, 0.1, chunk_size=1000)
    direct = nt_xent(z1, z2, 0.1)
    close(ours, direct, torch.float32)
    grads_ours = torch.autograd.grad(ours, (z1, z2))
    grads_direct = torch.autograd.grad(direct, (z1, z2))
    for a, b in zip(grads_ours, grads_direct, strict=True):
        close(a, b, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,classes,chunk", [(30, 4, 7), (45, 20, 16), (12, 3, 100)])
def test_supcon_matches_direct(m, classes, chunk, dtype) -> None:
    (z,) = leaves((m, 8), dtype=dtype, seed=m)
    labels = torch.randint(0, classes, (m,), generator=torch.Generator().manual_seed(m))
    labels[0] = 1000  # an anchor without positive: excluded from the mean
    ours = supcon_loss_views([z], labels, 0.1, chunk_size=chunk)
    direct = direct_supcon(z, labels, 0.1)
    close(ours, direct, dtype)
    close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(direct, z)[0], dtype)


def test_supcon_with_one_positive_per_anchor_is_nt_xent() -> None:
    z1, z2 = leaves((9, 5), (9, 5), dtype=torch.float64, seed=3)
    labels = torch.arange(9).repeat(2)
    close(supcon_loss_views([torch.cat([z1, z2])], labels, 0.3, chunk_size=4),
          nt_xent(z1, z2, 0.3), torch.float64)


def test_supcon_without_any_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="same label"):
        z = torch.randn(4, 3)
        supcon_rows(z, z, torch.arange(4), 0, 0.1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,queue_size,chunk", [(10, 37, 8), (33, 5, 7), (4, 0, 3)])
def test_moco_queue_matches_direct(n, queue_size, chunk, dtype) -> None:
    q, k, queue = leaves((n, 6), (n, 6), (queue_size, 6), dtype=dtype, seed=n + queue_size)
    ours = queue_info_nce(q, k, queue, 0.07, chunk_size=chunk)
    direct = direct_moco(q, k, queue, 0.07)
    close(ours, direct, dtype)
    for a, b in zip(torch.autograd.grad(ours, (q, k, queue), allow_unused=True),
                    torch.autograd.grad(direct, (q, k, queue), allow_unused=True), strict=True):
        if b is None or queue_size == 0:
            continue
        close(a, b, dtype)


def test_moco_detached_keys_and_queue_get_no_gradient() -> None:
    q, k, queue = leaves((5, 4), (5, 4), (9, 4), dtype=torch.float32, seed=0)
    loss = queue_info_nce(q, k.detach(), queue.detach(), 0.2, chunk_size=4)
    loss.backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,chunk", [(21, 4), (64, 30), (3, 1)])
def test_clip_matches_direct_including_learned_scale(n, chunk, dtype) -> None:
    images, texts = leaves((n, 12), (n, 12), dtype=dtype, seed=n)
    log_scale = torch.tensor(2.659, dtype=dtype, requires_grad=True)  # log(1 / 0.07)
    ours = clip_loss(images, texts, log_scale, chunk_size=chunk)
    direct = direct_clip(images, texts, log_scale.exp())
    close(ours, direct, dtype)
    for a, b in zip(torch.autograd.grad(ours, (images, texts, log_scale)),
                    torch.autograd.grad(direct, (images, texts, log_scale)), strict=True):
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_general_info_nce_matches_cross_entropy(dtype) -> None:
    anchors, candidates = leaves((13, 5), (29, 5), dtype=dtype, seed=7)
    positive = torch.randint(0, 29, (13,), generator=torch.Generator().manual_seed(1))
    positive[positive == torch.arange(13) + 4] = 0  # never the masked self column
    ours = info_nce_loss(anchors, candidates, positive, 3.0, self_offset=4, chunk_size=6)
    logits = 3.0 * anchors @ candidates.T
    logits[torch.arange(13), torch.arange(13) + 4] = float("-inf")
    direct = F.cross_entropy(logits, positive)
    close(ours, direct, dtype)
    for a, b in zip(torch.autograd.grad(ours, (anchors, candidates)),
                    torch.autograd.grad(direct, (anchors, candidates)), strict=True):
        close(a, b, dtype)


# ----------------------------------------------------------------------------- (e) distributed


@pytest.mark.parametrize("chunk", [5, None])
def test_nt_xent_two_simulated_ranks_equal_the_full_batch(chunk) -> None:
    """Rank r: its 2n views as rows, all ranks' views (rank-major, as gathering gives) as
    columns. DDP averages the ranks' gradients, so the sum of the per-rank gradients divided by
    the number of ranks must be the full loss's gradient (and the mean loss the full loss)."""
    world, n = 2, 7
    z1, z2 = leaves((world * n, 6), (world * n, 6), dtype=torch.float64, seed=11)
    full = nt_xent(z1, z2, 0.2)
    local_views = [torch.cat([z1[r * n:(r + 1) * n], z2[r * n:(r + 1) * n]]) for r in range(world)]
    columns = torch.cat(local_views)  # what gather_with_grad returns on every rank
    per_rank = [nt_xent_rows(local_views[r], columns, r * 2 * n, 0.2, chunk_size=chunk)
                for r in range(world)]
    close(sum(per_rank) / world, full, torch.float64)
    summed = torch.autograd.grad(sum(per_rank), (z1, z2))
    for a, b in zip(summed, torch.autograd.grad(full, (z1, z2)), strict=True):
        close(a / world, b, torch.float64)


@pytest.mark.parametrize("chunk", [4, None])
@pytest.mark.parametrize("world", [2, 3])
def test_supcon_simulated_ranks_equal_the_full_batch(world: int, chunk) -> None:
    """Ranks hold different numbers of anchors with a positive; the loss stays exact."""
    m = 6
    (z,) = leaves((world * m, 5), dtype=torch.float64, seed=world)
    labels = torch.tensor([0, 0, 1, 2, 3, 4] + [0, 1, 1, 5, 6, 7] + [2, 2, 3, 3, 8, 9])[: world * m]
    full = direct_supcon(z, labels, 0.1)
    per_rank = [supcon_rows(z[r * m:(r + 1) * m], z, labels, r * m, 0.1, chunk_size=chunk)
                for r in range(world)]
    close(sum(per_rank) / world, full, torch.float64)
    close(torch.autograd.grad(sum(per_rank), z)[0] / world, torch.autograd.grad(full, z)[0],
          torch.float64)


@pytest.mark.parametrize("chunk", [3, None])
def test_clip_two_simulated_ranks_equal_the_full_batch(chunk) -> None:
    world, n = 2, 5
    images, texts = leaves((world * n, 4), (world * n, 4), dtype=torch.float64, seed=5)
    full = direct_clip(images, texts, 10.0)
    per_rank = [
        clip_loss_rows(images[r * n:(r + 1) * n], texts[r * n:(r + 1) * n], images, texts,
                       r * n, 10.0, chunk_size=chunk)
        for r in range(world)
    ]
    close(sum(per_rank) / world, full, torch.float64)
    for a, b in zip(torch.autograd.grad(sum(per_rank), (images, texts)),
                    torch.autograd.grad(full, (images, texts)), strict=True):
        close(a / world, b, torch.float64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank: int, world: int, port: int, z1: torch.Tensor, z2: torch.Tensor,
                 out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = z1.shape[0] // world
        local1 = z1[rank * n:(rank + 1) * n].clone().requires_grad_()
        local2 = z2[rank * n:(rank + 1) * n].clone().requires_grad_()
        loss = tiled_nt_xent(local1, local2, 0.2, chunk_size=3)
        loss.backward()
        torch.save((loss.detach(), local1.grad, local2.grad), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_nt_xent_under_two_gloo_processes_gathers_global_negatives(tmp_path) -> None:
    """The real gather: each rank's gradient (before DDP's averaging, times 1/W) equals the
    full batch's gradient of its rows."""
    import torch.multiprocessing as mp

    world, n = 2, 4
    z1, z2 = (t.detach() for t in leaves((world * n, 3), (world * n, 3), dtype=torch.float64,
                                         seed=2))
    mp.spawn(_gloo_worker, args=(world, _free_port(), z1, z2, str(tmp_path)), nprocs=world)
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    full1, full2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    full = nt_xent(full1, full2, 0.2)
    g1, g2 = torch.autograd.grad(full, (full1, full2))
    close(sum(out[r][0] for r in range(world)) / world, full.detach(), torch.float64)
    for r in range(world):
        close(out[r][1] / world, g1[r * n:(r + 1) * n], torch.float64)
        close(out[r][2] / world, g2[r * n:(r + 1) * n], torch.float64)


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("form", ["nt_xent", "supcon", "moco", "clip"])
def test_half_precision_inputs_do_not_overflow_at_temperature_001(dtype, form) -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(40, 16, generator=generator)
    near = base + 0.01 * torch.randn(40, 16, generator=generator)
    x = base.to(dtype).requires_grad_()
    y = near.to(dtype).requires_grad_()
    labels = torch.arange(40) % 10
    if form == "nt_xent":
        loss = tiled_nt_xent(x, y, 0.01, chunk_size=7)
        reference = direct_nt_xent(base.double(), near.double(), 0.01)
    elif form == "supcon":
        loss = supcon_loss_views([torch.cat([x, y])], labels.repeat(2), 0.01, chunk_size=7)
        reference = direct_supcon(torch.cat([base, near]).double(), labels.repeat(2), 0.01)
    elif form == "moco":
        loss = queue_info_nce(x, y, x[:30], 0.01, chunk_size=7)
        reference = direct_moco(base.double(), near.double(), base[:30].double(), 0.01)
    else:
        loss = clip_loss(x, y, torch.tensor(math.log(100.0)), chunk_size=7)
        reference = direct_clip(base.double(), near.double(), 100.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    # the inputs were rounded to half precision: agreement to that precision (logits are 100x)
    assert abs(loss.item() - reference.item()) < 0.1 * max(1.0, abs(reference.item()))


def test_running_maximum_rescales_across_tiles_without_overflow() -> None:
    """Logits grow along the row (up to 2,000): each new tile raises the running maximum."""
    anchors = torch.ones(5, 1, dtype=torch.float64, requires_grad=True)
    candidates = torch.linspace(-1000.0, 2000.0, 23, dtype=torch.float64)[:, None]
    ours = tiled_logsumexp(anchors, candidates, chunk_size=4)
    torch.testing.assert_close(ours, torch.logsumexp(anchors @ candidates.T, dim=1))
    assert torch.isfinite(ours).all()


def test_row_without_any_column_has_minus_infinite_lse_and_zero_gradient() -> None:
    anchors = torch.randn(3, 2, requires_grad=True)
    candidates = torch.randn(3, 2, requires_grad=True)
    lse = tiled_logsumexp(anchors[:1], candidates[:1], self_offset=0)
    assert lse.item() == float("-inf")
    lse = tiled_logsumexp(anchors, candidates, self_offset=0, chunk_size=1)
    lse.sum().backward()
    assert torch.isfinite(anchors.grad).all() and torch.isfinite(candidates.grad).all()


# ----------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("self_offset", [None, 0, 3])
def test_gradcheck_of_the_tiled_log_sum_exp(self_offset) -> None:
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    candidates = torch.randn(9, 3, dtype=torch.float64, generator=generator, requires_grad=True)

    def function(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return tiled_logsumexp(a, c, self_offset=self_offset, chunk_size=2)

    assert torch.autograd.gradcheck(function, (anchors, candidates))


def test_gradcheck_of_supcon_and_nt_xent() -> None:
    z1, z2 = leaves((4, 3), (4, 3), dtype=torch.float64, seed=9)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 3])
    assert torch.autograd.gradcheck(
        lambda a, b: tiled_nt_xent(a, b, 0.5, chunk_size=3), (z1, z2))
    assert torch.autograd.gradcheck(
        lambda a, b: supcon_loss_views([torch.cat([a, b])], labels, 0.5, chunk_size=3), (z1, z2))


# ----------------------------------------------------------------------------- memory


class _LargestOutput(TorchDispatchMode):
    """Records the largest number of elements of any tensor an aten operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return result


def test_no_operation_produces_an_n_by_n_matrix() -> None:
    n, d, chunk = 150, 8, 48  # 300 views: the direct form's matrix has 90,000 entries
    z1, z2 = leaves((n, d), (n, d), dtype=torch.float32, seed=1)
    with _LargestOutput() as largest:
        tiled_nt_xent(z1, z2, 0.1, chunk_size=chunk).backward()
    assert largest.largest <= max(2 * n * d, chunk * chunk)
    with _LargestOutput() as direct:
        nt_xent(z1, z2, 0.1).backward()
    assert direct.largest >= (2 * n) ** 2  # the check does see an N x N matrix when there is one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_the_cpu() -> None:
    z1, z2 = leaves((300, 16), (300, 16), dtype=torch.float32, seed=8)
    expected = nt_xent(z1, z2, 0.1)
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    c1, c2 = (z.detach().cuda().requires_grad_() for z in (z1, z2))
    ours = tiled_nt_xent(c1, c2, 0.1, chunk_size=128)
    grads = torch.autograd.grad(ours, (c1, c2))
    torch.testing.assert_close(ours.cpu(), expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- wiring and errors


def test_nt_xent_chunk_size_argument_and_automatic_choice() -> None:
    z1, z2 = leaves((30, 4), (30, 4), dtype=torch.float64, seed=4)
    close(nt_xent(z1, z2, 0.3, chunk_size=7), direct_nt_xent(z1, z2, 0.3), torch.float64)
    close(NTXentLoss(0.3, chunk_size=7)(z1, z2), direct_nt_xent(z1, z2, 0.3), torch.float64)
    assert auto_chunk_size(8192, 8192) is None  # 256 MiB: still direct
    assert auto_chunk_size(8193, 8193) is not None
    with pytest.raises(ConfigError, match="chunk_size"):
        nt_xent(z1, z2, 0.3, chunk_size=0)


def test_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        tiled_nt_xent(torch.randn(4, 3), torch.randn(4, 3), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        tiled_nt_xent(torch.randn(4, 3), torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match="row_offset"):
        nt_xent_rows(torch.randn(4, 3), torch.randn(8, 3), 6, 0.5)
    with pytest.raises(ValueError, match="dimensions differ"):
        queue_info_nce(torch.randn(4, 3), torch.randn(4, 3), torch.randn(9, 2), 0.5)
    with pytest.raises(ConfigError, match="logit_scale"):
        a, b = torch.randn(4, 3), torch.randn(4, 3)
        clip_loss_rows(a, b, a, b, 0, -1.0)
    with pytest.raises(ValueError, match="labels"):
        supcon_loss_views([torch.randn(4, 3)], torch.arange(3), 0.5)
