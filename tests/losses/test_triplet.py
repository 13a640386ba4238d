"""Triplet loss (FaceNet) with its mining strategies, checked against brute-force selection and a
direct loop implementation of the loss."""

import pytest
import torch

from contrastlab.errors import ConfigError
from contrastlab.losses import TripletLoss, mine_triplets, squared_distances, triplet_loss


def distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance of the L2-normalised vectors."""
    return torch.sum((u / torch.linalg.norm(u) - v / torch.linalg.norm(v)) ** 2)


def brute_force_triplets(z: torch.Tensor, ids: list[int], mining: str, margin: float):
    """Select triplets by enumerating candidates; returns the triplets and how many semi-hard
    selections fell back to the hardest negative."""
    m = len(ids)
    d = [[float(distance(z[a], z[b])) for b in range(m)] for a in range(m)]
    triplets, fallbacks = [], 0
    for a in range(m):
        positives = [p for p in range(m) if p != a and ids[p] == ids[a]]
        negatives = [k for k in range(m) if ids[k] != ids[a]]
        hardest_negative = min(negatives, key=lambda k: d[a][k])
        if mining == "batch-hard":
            triplets.append((a, max(positives, key=lambda p: d[a][p]), hardest_negative))
            continue
        for p in positives:
            semi_hard = [k for k in negatives if d[a][p] < d[a][k] < d[a][p] + margin]
            if semi_hard:
                triplets.append((a, p, min(semi_hard, key=lambda k: d[a][k])))
            else:
                fallbacks += 1
                triplets.append((a, p, hardest_negative))
    return triplets, fallbacks


def loss_direct(z: torch.Tensor, triplets, margin: float) -> torch.Tensor:
    losses = [torch.clamp(distance(z[a], z[p]) - distance(z[a], z[n]) + margin, min=0)
              for a, p, n in triplets]
    return sum(losses) / len(losses)


def views_of_images(num_images: int, num_views: int, dim: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_images, dim, dtype=torch.float64, generator=generator)
    z = centres.repeat(num_views, 1) + 0.7 * torch.randn(num_images * num_views, dim,
                                                         dtype=torch.float64, generator=generator)
    return z.requires_grad_(), list(range(num_images)) * num_views


@pytest.mark.parametrize("mining", ["batch-hard", "semi-hard"])
@pytest.mark.parametrize("num_images,num_views,dim,margin", [(4, 2, 3, 0.2), (5, 3, 4, 0.5),
                                                              (8, 2, 8, 1.0)])
def test_mining_and_loss_match_brute_force(mining, num_images, num_views, dim, margin) -> None:
    z, ids = views_of_images(num_images, num_views, dim, seed=num_images * 10 + num_views)
    expected, _ = brute_force_triplets(z.detach(), ids, mining, margin)
    anchors, positives, negatives = mine_triplets(squared_distances(z.detach()),
                                                  torch.tensor(ids), mining, margin)
    assert list(zip(anchors.tolist(), positives.tolist(), negatives.tolist(),
                    strict=True)) == expected
    ours = triplet_loss(z, torch.tensor(ids), margin, mining)
    direct = loss_direct(z, expected, margin)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(direct, z)[0],
                               atol=1e-5, rtol=1e-5)


def test_semi_hard_uses_both_the_window_and_the_fallback() -> None:
    # the data of the parametrised test above exercises both branches of semi-hard mining
    z, ids = views_of_images(5, 3, 4, seed=53)
    triplets, fallbacks = brute_force_triplets(z.detach(), ids, "semi-hard", 0.5)
    assert 0 < fallbacks < len(triplets)


def test_random_negatives_are_uniform_over_other_images_and_reproducible() -> None:
    z, ids = views_of_images(4, 2, 5, seed=0)
    ids_t = torch.tensor(ids)
    distances = squared_distances(z.detach())
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(8, 8)
    for _ in range(600):
        a, p, n = mine_triplets(distances, ids_t, "none", 0.2, generator)
        assert (ids_t[a] == ids_t[p]).all() and (a != p).all() and (ids_t[a] != ids_t[n]).all()
        assert a.tolist() == list(range(8)) and p.tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
        counts[a, n] += 1
    negatives_of_anchor0 = counts[0][ids_t != ids_t[0]]
    assert ((negatives_of_anchor0 > 60) & (negatives_of_anchor0 < 140)).all(), counts[0]
    # the loss with a seeded generator is the direct loss over the triplets that seed selects
    a, p, n = mine_triplets(distances, ids_t, "none", 0.2, torch.Generator().manual_seed(5))
    triplets = list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    ours = triplet_loss(z, ids_t, 0.2, "none", torch.Generator().manual_seed(5))
    direct = loss_direct(z, triplets, 0.2)
    torch.testing.assert_close(ours, direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, z)[0], torch.autograd.grad(direct, z)[0],
                               atol=1e-5, rtol=1e-5)


def test_zero_when_every_negative_is_beyond_the_margin() -> None:
    # two images, identical views, orthogonal: d(a,p) = 0, d(a,n) = 2 > margin
    z = torch.eye(2, dtype=torch.float64).repeat(2, 1)
    for mining in ("none", "batch-hard", "semi-hard"):
        assert triplet_loss(z, torch.tensor([0, 1, 0, 1]), 0.2, mining).item() == 0.0


def test_errors() -> None:
    with pytest.raises(ConfigError, match="unknown mining 'hard'"):
        TripletLoss(mining="hard")
    with pytest.raises(ConfigError, match="margin"):
        triplet_loss(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), margin=0.0)
    with pytest.raises(ValueError, match="positive"):
        triplet_loss(torch.randn(3, 3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="negative"):
        triplet_loss(torch.randn(3, 3), torch.tensor([0, 0, 0]))
    z, ids = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.testing.assert_close(TripletLoss(0.3, "batch-hard")(z, ids),
                               triplet_loss(z, ids, 0.3, "batch-hard"))
