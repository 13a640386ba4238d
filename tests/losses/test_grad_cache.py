"""GradCache: parameter gradients equal those of the full batch (Gao et al. 2021)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from contrastlab.losses import nt_xent, tiled_nt_xent
from contrastlab.losses.grad_cache import grad_cache_backward
from tests.threads import one_thread


@pytest.fixture(autouse=True, scope="module")
def one_thread_here() -> Iterator[None]:
    """Tiny matmuls: a second MKL thread on an oversubscribed CPU only adds waiting."""
    with one_thread():
        yield


def mlp(dropout: float = 0.0, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 16)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(16))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 8)]
    return nn.Sequential(*layers).double()


def pairs_loss(z: torch.Tensor) -> torch.Tensor:
    """NT-Xent with rows i and i + N/2 a pair (the SimCLR 2N layout)."""
    n = z.shape[0] // 2
    return nt_xent(z[:n], z[n:], 0.2)


def gradients(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def inputs(n: int = 22) -> torch.Tensor:
    return torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def assert_all_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("sizes", [[8, 8, 6], [1] * 22, [22]])
def test_gradients_equal_the_full_batch_without_batch_norm(sizes) -> None:
    x = inputs()
    model = mlp()
    full_loss = pairs_loss(model(x))
    full_loss.backward()
    expected = gradients(model)
    model.zero_grad()
    out = grad_cache_backward(model, list(x.split(sizes)), pairs_loss)
    assert_all_close(gradients(model), expected)
    torch.testing.assert_close(out.loss, full_loss.detach())
    assert out.embeddings.shape == (22, 8) and not out.embeddings.requires_grad


def test_float32_and_tiled_loss_within_1e_5() -> None:
    x = inputs(40).float()
    model = mlp().float()
    pairs_loss(model(x)).backward()
    expected = gradients(model)
    model.zero_grad()
    grad_cache_backward(model, list(x.split(7)),
                        lambda z: tiled_nt_xent(z[:20], z[20:], 0.2, chunk_size=9))
    for a, b in zip(gradients(model), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_dropout_sees_the_same_randomness_in_both_passes() -> None:
    """Reference: the same micro-batches forwarded once, in one graph, from the same seed."""
    x = inputs()
    chunks = list(x.split(6))
    model = mlp(dropout=0.5)
    torch.manual_seed(123)
    pairs_loss(torch.cat([model(c) for c in chunks])).backward()
    expected = gradients(model)
    after_reference = torch.rand(3)

    model.zero_grad()
    torch.manual_seed(123)
    grad_cache_backward(model, chunks, pairs_loss)
    assert_all_close(gradients(model), expected)
    torch.testing.assert_close(torch.rand(3), after_reference)  # the generator continues alike

    # without restoring the random state the second pass draws other dropout masks
    model.zero_grad()
    torch.manual_seed(123)
    with torch.no_grad():
        cached = torch.cat([model(c) for c in chunks])
    cached.requires_grad_()
    pairs_loss(cached).backward()
    for c, g in zip(chunks, cached.grad.split(6), strict=True):
        model(c).backward(g)
    assert any(not torch.allclose(a, b) for a, b in zip(gradients(model), expected, strict=True))


def test_batch_norm_is_exact_only_in_eval_mode() -> None:
    x = inputs()
    model = mlp(batch_norm=True)
    for train_mode, exact in ((True, False), (False, True)):
        model.train(train_mode)
        model.zero_grad()
        pairs_loss(model(x)).backward()
        expected = gradients(model)
        model.zero_grad()
        grad_cache_backward(model, list(x.split(8)), pairs_loss)
        same = all(torch.allclose(a, b, atol=1e-10) for a, b in
                   zip(gradients(model), expected, strict=True))
        assert same == exact  # train mode: per-micro-batch statistics (documented)


def test_parameters_of_the_loss_tuple_micro_batches_and_loss_scaling() -> None:
    x, shift = inputs(), torch.randn(22, 8, dtype=torch.float64)
    model = mlp()
    log_scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def encode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return model(a) + b

    def loss_fn(z: torch.Tensor) -> torch.Tensor:
        return nt_xent(z[:11], z[11:], float(1 / 1.5)) * log_scale.exp()

    loss_fn(encode(x, shift)).backward()
    expected = gradients(model) + [log_scale.grad.clone()]
    model.zero_grad()
    log_scale.grad = None
    micro = list(zip(x.split(5), shift.split(5), strict=True))
    grad_cache_backward(encode, micro, loss_fn, scale_loss=lambda loss: 4 * loss)
    assert_all_close(gradients(model) + [log_scale.grad], [4 * g for g in expected])


def test_rejects_no_micro_batch_and_a_loss_without_the_embeddings() -> None:
    model = mlp()
    with pytest.raises(ValueError, match="at least one"):
        grad_cache_backward(model, [], pairs_loss)
    with pytest.raises(ValueError, match="does not depend"):
        grad_cache_backward(model, [inputs()], lambda z: (z.detach() ** 2).sum().requires_grad_())
