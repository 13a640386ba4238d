"""NNCLR: the positive is the exact cosine nearest neighbour of z in the support set, the loss is
symmetrised InfoNCE against the other view's predictions, the support set is filled with the
normalised z1 after the loss (newest K in order)."""

import torch
import torch.nn.functional as F

from contrastlab.losses import in_batch_info_nce
from contrastlab.methods import build_method
from contrastlab.methods.nnclr import NNCLR
from contrastlab.models import build_backbone


def _method(**kwargs) -> NNCLR:
    torch.manual_seed(0)
    options = {"projection_dim": 8, "projection_hidden_dim": 16, "prediction_hidden_dim": 16,
               "queue_size": 10}
    options.update(kwargs)
    return NNCLR(build_backbone("convnet-small", 1), **options)


def _views(seed: int, n: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 8, 8, generator=generator) for _ in range(2)]


def brute_force_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    rows = []
    for i in range(z.shape[0]):
        similarities = [F.cosine_similarity(z[i], s, dim=0).item() for s in support]
        rows.append(support[max(range(len(similarities)), key=lambda j: similarities[j])])
    return torch.stack(rows)


def test_loss_uses_exact_neighbours_and_support_keeps_newest_z1_in_order() -> None:
    method = _method().eval()
    written = []
    for step in range(4):  # K = 10, B = 4
        x1, x2 = _views(step)
        support_before = method.support.valid().clone()
        out = method.training_step([x1, x2], None)
        z = method.projection_head(method.backbone(torch.cat([x1, x2])))
        p = method.prediction_head(z)
        z1, z2 = z[:4].detach(), z[4:].detach()
        if step == 0:  # empty support set: each view is its own neighbour
            assert support_before.shape[0] == 0
            nn1, nn2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        else:
            nn1 = brute_force_neighbours(z1, support_before)
            nn2 = brute_force_neighbours(z2, support_before)
            torch.testing.assert_close(method.neighbours(z1), nn1)
        expected = 0.5 * (in_batch_info_nce(nn1, p[4:], 0.1) + in_batch_info_nce(nn2, p[:4], 0.1))
        torch.testing.assert_close(out.loss, expected)
        assert torch.equal(method.support.valid(), support_before)  # not enqueued by the loss
        method.on_step_end(step, 0.0, out)
        written.append(F.normalize(z1, dim=1))
        torch.testing.assert_close(method.support.ordered(), torch.cat(written)[-10:])


def test_gradient_reaches_projector_only_through_the_predictor() -> None:
    method = _method().train()
    method.support.enqueue(F.normalize(torch.randn(10, 8), dim=1))
    out = method.training_step(_views(5, n=8), None)
    out.loss.backward()
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
    neighbours = method.neighbours(torch.randn(3, 8, requires_grad=True))
    assert not neighbours.requires_grad


def test_defaults_and_state_dict_round_trip() -> None:
    method = build_method("nnclr", "convnet-small", 1)
    assert (method.temperature, method.support.size) == (0.1, 4096)
    assert method.project(torch.randn(3, 1, 8, 8)).shape == (3, 256)
    small = _method()
    out = small.training_step(_views(0), None)
    small.on_step_end(0, 0.0, out)
    state = small.state_dict()
    assert {"support.features", "support.pointer", "support.filled"} <= set(state)
    restored = _method()
    restored.support = type(restored.support)(10, 8)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.support.ordered(), small.support.ordered())
