"""SwAV method: wiring of the loss, prototypes (normalised, frozen at first), queue, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastlab.losses import sinkhorn_knopp, swapped_prediction_loss
from contrastlab.methods import build_method
from contrastlab.methods.swav import SwAV
from contrastlab.models import build_backbone


def small_swav(**kwargs) -> SwAV:
    torch.manual_seed(0)
    options = {"projection_dim": 8, "projection_hidden_dim": 16, "num_prototypes": 10}
    options.update(kwargs)
    method = build_method("swav", "convnet-small", 1, **options)
    assert isinstance(method, SwAV)
    return method


def multi_crop_views(batch: int = 6, local: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return ([torch.randn(batch, 1, 8, 8, generator=gen) for _ in range(2)]
            + [torch.randn(batch, 1, 4, 4, generator=gen) for _ in range(local)])


def embed(method: SwAV, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(method.projection_head(method.backbone(images)), dim=1)


def test_defaults_follow_the_paper() -> None:
    method = SwAV(build_backbone("convnet-small", 1))
    assert method.temperature == 0.1
    assert (method.sinkhorn_iterations, method.sinkhorn_epsilon) == (3, 0.05)
    assert method.prototypes.weight.shape == (3000, 128)
    assert method.projection_head.output_dim == 128
    assert method.projection_head.layers[0].out_features == 512
    assert (method.num_views, method.default_local_crops, method.supports_multi_crop) == (2, 6,
                                                                                          True)
    assert len(method.queues) == 0


def test_training_step_is_swapped_prediction_with_sinkhorn_codes_of_global_views() -> None:
    method = small_swav()
    views = multi_crop_views()
    method.on_step_start(100, 0.5)
    out = method.training_step(views, None)
    # recompute: each group of same-size views through backbone and head as one batch
    with torch.no_grad():
        z = torch.cat([embed(method, torch.cat(views[:2])), embed(method, torch.cat(views[2:]))])
        scores = (z @ method.prototypes.weight.t()).view(5, 6, 10)
        codes = torch.stack([sinkhorn_knopp(scores[s], 0.05, 3) for s in range(2)])
        expected = swapped_prediction_loss(scores, codes, 0.1)
    torch.testing.assert_close(out.loss.detach(), expected)


def test_prototypes_are_normalised_before_each_step() -> None:
    method = small_swav()
    with torch.no_grad():
        method.prototypes.weight.mul_(torch.rand(10, 1) * 3 + 0.1)  # as an optimiser step would
    method.training_step(multi_crop_views(), None)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(10))


def test_prototypes_get_no_gradient_while_frozen_and_do_after() -> None:
    method = small_swav(freeze_prototypes_steps=3)
    for step, frozen in ((0, True), (2, True), (3, False), (10, False)):
        method.zero_grad(set_to_none=True)
        method.on_step_start(step, step / 10)
        method.training_step(multi_crop_views(seed=step), None).loss.backward()
        grad = method.prototypes.weight.grad
        if frozen:
            assert grad is None, step
        else:
            assert grad is not None and grad.abs().sum() > 0, step
        head_grad = method.projection_head.layers[0].weight.grad
        assert head_grad is not None and head_grad.abs().sum() > 0  # the rest always learns


def test_queue_holds_global_projections_and_feeds_the_codes() -> None:
    method = small_swav(queue_size=12)
    batch = 6
    enqueued = []
    for step in range(2):
        views = multi_crop_views(seed=step)
        method.on_step_start(step, 0.0)
        out = method.training_step(views, None)
        method.eval()
        with torch.no_grad():
            enqueued.append([method.project(views[s]) for s in range(2)])
        method.train()
        method.on_step_end(step, 0.0, out)
    for view in range(2):
        assert int(method.queues[view].filled) == 12
    # the queue is full now: the codes of the next step use queue + batch columns
    views = multi_crop_views(seed=5)
    method.on_step_start(2, 0.0)
    out = method.training_step(views, None)
    with torch.no_grad():
        z = torch.cat([embed(method, torch.cat(views[:2])), embed(method, torch.cat(views[2:]))])
        weight = method.prototypes.weight
        scores = (z @ weight.t()).view(5, batch, 10)
        codes = torch.stack([
            sinkhorn_knopp(torch.cat([method.queues[s].features @ weight.t(), scores[s]]),
                           0.05, 3)[-batch:]
            for s in range(2)
        ])
        without_queue = torch.stack([sinkhorn_knopp(scores[s], 0.05, 3) for s in range(2)])
    torch.testing.assert_close(out.loss.detach(), swapped_prediction_loss(scores, codes, 0.1))
    assert not torch.allclose(codes, without_queue)


def test_queue_contents_are_the_newest_global_projections_in_order() -> None:
    method = small_swav(queue_size=8)  # not a multiple of the batch of 6
    seen: list[list[torch.Tensor]] = [[], []]
    for step in range(3):
        views = multi_crop_views(seed=step)
        method.on_step_start(step, 0.0)
        out = method.training_step(views, None)
        pending = out.after_step["projections"]
        assert pending is not None
        for view in range(2):
            seen[view].append(pending[view].clone())
        method.on_step_end(step, 0.0, out)
    for view in range(2):
        newest = torch.cat(seen[view])[-8:]
        torch.testing.assert_close(method.queues[view].ordered(), newest)
        # the projections are unit vectors of z, without gradient
        torch.testing.assert_close(newest.norm(dim=1), torch.ones(8))


def test_state_dict_round_trip_includes_prototypes_and_queue() -> None:
    method = small_swav(queue_size=6)
    method.on_step_start(0, 0.0)
    out = method.training_step(multi_crop_views(), None)
    method.on_step_end(0, 0.0, out)
    state = method.state_dict()
    assert {"prototypes.weight", "queues.0.features", "queues.1.pointer"} <= set(state)
    clone = small_swav(queue_size=6)
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.queues[1].ordered(), method.queues[1].ordered())
    torch.testing.assert_close(clone.prototypes.weight, method.prototypes.weight)


def test_two_views_without_local_crops_and_project_encode_shapes() -> None:
    method = small_swav()
    out = method.training_step(multi_crop_views(local=0), None)
    assert torch.isfinite(out.loss)
    method.eval()
    x = torch.randn(3, 1, 8, 8)
    assert method.encode(x).shape == (3, method.feature_dim)
    z = method.project(x)
    assert z.shape == (3, 8)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="global views"):
        method.training_step(multi_crop_views()[:1], None)
