"""SupCon (L_out) against a slow, direct implementation of Khosla et al.'s eq. (2)."""

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import SupConLoss, nt_xent, supcon_loss, supcon_loss_views


def supcon_direct(z1: torch.Tensor, z2: torch.Tensor, labels: list[int], temperature: float):
    """Views indexed 0..2N-1 (view 1 of every image, then view 2), loops over anchors."""
    n = z1.shape[0]
    views = [z1[k] / torch.linalg.norm(z1[k]) for k in range(n)]
    views += [z2[k] / torch.linalg.norm(z2[k]) for k in range(n)]
    view_labels = labels + labels
    total = torch.zeros((), dtype=z1.dtype)
    for i in range(2 * n):
        others = [a for a in range(2 * n) if a != i]
        positives = [p for p in others if view_labels[p] == view_labels[i]]
        denominator = sum(torch.exp(torch.dot(views[i], views[a]) / temperature) for a in others)
        total = total - sum(
            torch.log(torch.exp(torch.dot(views[i], views[p]) / temperature) / denominator)
            for p in positives) / len(positives)
    return total / (2 * n)


@pytest.mark.parametrize("labels,d,temperature", [
    ([0, 1, 0, 2, 1, 0], 4, 0.1),
    ([3, 3, 3, 3], 5, 0.5),
    ([0, 1, 2, 3, 4], 3, 0.07),
    ([1, 0, 1, 0, 1, 0, 2, 2], 8, 1.0),
])
def test_value_and_gradient_match_direct_formula(labels, d: int, temperature: float) -> None:
    n = len(labels)
    generator = torch.Generator().manual_seed(n * 7 + d)
    z1 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    z2 = torch.randn(n, d, dtype=torch.float64, generator=generator, requires_grad=True)
    ours = supcon_loss(z1, z2, torch.tensor(labels), temperature)
    direct = supcon_direct(z1, z2, labels, temperature)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, (z1, z2)), torch.autograd.grad(direct, (z1, z2)),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_without_labels_it_is_nt_xent(temperature: float) -> None:
    torch.manual_seed(0)
    z1 = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    ours = supcon_loss(z1, z2, None, temperature)
    reference = nt_xent(z1, z2, temperature)
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=1e-10)
    for a, b in zip(torch.autograd.grad(ours, (z1, z2)),
                    torch.autograd.grad(reference, (z1, z2)), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # distinct labels mean the same as no labels
    torch.testing.assert_close(supcon_loss(z1, z2, torch.arange(12) * 3, temperature),
                               reference)


def test_same_class_views_pulled_together() -> None:
    torch.manual_seed(1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    centres = torch.randn(4, 16)
    clustered = centres[labels] + 0.05 * torch.randn(8, 16)
    scattered = torch.randn(8, 16)
    assert supcon_loss(clustered, clustered, labels) < supcon_loss(scattered, scattered, labels)


def test_stable_in_low_precision_and_errors() -> None:
    z1 = torch.randn(32, 16).to(torch.bfloat16).requires_grad_()
    loss = supcon_loss(z1, z1.detach() + 0.01, torch.randint(0, 3, (32,)), 0.01)
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(ConfigError, match="temperature"):
        SupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        supcon_loss(torch.randn(4, 3), torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    a, b, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    torch.testing.assert_close(SupConLoss(0.2)(a, b, y), supcon_loss(a, b, y, 0.2))


def supcon_direct_views(views: list[torch.Tensor], labels: list[int], temperature: float):
    """Eq. (2) over V views (view v of image k is index v*N + k); anchors without a positive
    (possible with one view) are left out of the mean."""
    n = views[0].shape[0]
    flat = [v[k] / torch.linalg.norm(v[k]) for v in views for k in range(n)]
    view_labels = labels * len(views)
    terms = []
    for i in range(len(flat)):
        others = [a for a in range(len(flat)) if a != i]
        positives = [p for p in others if view_labels[p] == view_labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(torch.dot(flat[i], flat[a]) / temperature) for a in others)
        terms.append(-sum(
            torch.log(torch.exp(torch.dot(flat[i], flat[p]) / temperature) / denominator)
            for p in positives) / len(positives))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("num_views,labels,temperature", [
    (1, [0, 1, 0, 2, 1, 0], 0.1),     # class 2 appears once: that anchor has no positive
    (1, [3, 3, 3, 3], 0.5),
    (3, [0, 1, 2, 0, 4], 0.2),
    (4, [1, 1, 0], 1.0),
])
def test_any_number_of_views_matches_direct_formula(num_views: int, labels: list[int],
                                                    temperature: float) -> None:
    generator = torch.Generator().manual_seed(num_views * 11 + len(labels))
    views = [torch.randn(len(labels), 5, dtype=torch.float64, generator=generator,
                         requires_grad=True) for _ in range(num_views)]
    ours = supcon_loss_views(views, torch.tensor(labels), temperature)
    direct = supcon_direct_views(views, labels, temperature)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, views), torch.autograd.grad(direct, views),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_two_views_is_supcon_loss_and_single_view_edge_cases() -> None:
    torch.manual_seed(2)
    z1, z2, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 2, 2])
    torch.testing.assert_close(supcon_loss_views([z1, z2], y, 0.3), supcon_loss(z1, z2, y, 0.3))
    # every class once in a one-view batch: no anchor has a positive, the loss is 0 with no
    # gradient (rather than NaN)
    lonely = torch.randn(4, 3, requires_grad=True)
    loss = supcon_loss_views([lonely], torch.arange(4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(lonely.grad, torch.zeros_like(lonely))
    with pytest.raises(ValueError, match="needs labels"):
        supcon_loss_views([z1], None)
    with pytest.raises(ValueError, match="at least one view"):
        supcon_loss_views([], y)
    with pytest.raises(ValueError, match="same shape"):
        supcon_loss_views([z1, z2[:5]], y)
