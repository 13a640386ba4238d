"""MoCo v2: the loss is InfoNCE against the queue from before the batch, keys enter the queue
after the loss (newest K in order), keys get no gradient, momentum update, shuffling BN groups."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.errors import ConfigError
from contrastlab.losses import moco_info_nce
from contrastlab.methods import build_method
from contrastlab.methods.moco_v2 import MoCoV2
from contrastlab.models import build_backbone
from contrastlab.models.ema import cosine_momentum


def _method(**kwargs) -> MoCoV2:
    torch.manual_seed(0)
    options = {"projection_dim": 8, "projection_hidden_dim": 16, "queue_size": 10}
    options.update(kwargs)
    return MoCoV2(build_backbone("convnet-small", 1), **options)


def _views(seed: int, n: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 8, 8, generator=generator) for _ in range(2)]


def _queries_and_keys(method: MoCoV2, x_q: torch.Tensor, x_k: torch.Tensor):
    """Independent forward passes (eval mode: BN running statistics, grouping irrelevant)."""
    q = F.normalize(method.projection_head(method.backbone(x_q)), dim=1)
    with torch.no_grad():
        k = F.normalize(method.key_projection_head(method.key_backbone(x_k)), dim=1)
    return q, k


def test_loss_uses_queue_before_enqueue_and_queue_keeps_newest_keys_in_order() -> None:
    method = _method(ema_momentum=0.9).eval()
    written = []
    for step in range(4):  # K = 10 is not a multiple of B = 4
        x1, x2 = _views(step)
        queue_before = method.queue.features.clone()
        method.on_step_start(step, step / 4)
        out = method.training_step([x1, x2], None)
        q, k = _queries_and_keys(method, x1, x2)
        torch.testing.assert_close(out.loss, moco_info_nce(q, k, queue_before, 0.2))
        assert torch.equal(method.queue.features, queue_before)  # not enqueued by the loss
        method.on_step_end(step, step / 4, out)
        written.append(k)
        expected = torch.cat(written)[-10:]
        torch.testing.assert_close(method.queue.ordered(), expected)


def test_symmetric_loss_averages_both_directions_and_enqueues_both_views() -> None:
    method = _method(symmetric=True).eval()
    x1, x2 = _views(0)
    queue_before = method.queue.features.clone()
    out = method.training_step([x1, x2], None)
    q1, k2 = _queries_and_keys(method, x1, x2)
    q2, k1 = _queries_and_keys(method, x2, x1)
    expected = 0.5 * (moco_info_nce(q1, k2, queue_before, 0.2)
                      + moco_info_nce(q2, k1, queue_before, 0.2))
    torch.testing.assert_close(out.loss, expected)
    method.on_step_end(0, 0.0, out)
    torch.testing.assert_close(method.queue.ordered(), torch.cat([k1, k2]))


def test_keys_receive_no_gradient_and_momentum_update_follows_formula() -> None:
    method = _method(ema_momentum=0.9).train()
    out = method.training_step(_views(1, n=8), None)
    out.loss.backward()
    key_modules = (method.key_backbone, method.key_projection_head)
    for module in key_modules:
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.1)
    before = [p.clone() for p in method.key_backbone.parameters()]
    method.on_step_end(0, 0.0, out)
    for old, new, theta in zip(before, method.key_backbone.parameters(),
                               method.backbone.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * theta)
    cosine = _method(ema_momentum=0.99, ema_cosine=True)
    cosine.on_step_start(5, 0.5)
    assert cosine.current_ema_momentum() == pytest.approx(cosine_momentum(0.99, 0.5))


class Membership(nn.Module):
    """Stands in for an encoder: each output row is the indicator of the samples in the same
    forward call (the BN group), for inputs holding sample ids."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        row = torch.zeros(self.total)
        row[ids.long().flatten()] = 1.0
        return row.expand(ids.shape[0], self.total).clone()


@pytest.mark.parametrize("batch,groups", [(16, 4), (64, 4), (10, 3)])
def test_a_keys_batch_norm_group_is_never_its_querys_group(batch: int, groups: int) -> None:
    method = _method(bn_groups=groups).train()
    method.backbone = method.key_backbone = Membership(batch)
    method.projection_head = method.key_projection_head = nn.Identity()
    ids = torch.arange(batch, dtype=torch.float32).unsqueeze(1)
    query_groups = method.queries(ids) > 0
    key_groups = method.keys(ids)[0] > 0
    for i in range(batch):
        assert query_groups[i, i] and key_groups[i, i]
        assert not torch.equal(query_groups[i], key_groups[i])
    assert len(query_groups.unique(dim=0)) == groups  # queries in `groups` ghost groups


def test_state_dict_round_trip_includes_queue_key_encoder_and_shuffle_seed() -> None:
    method = _method().eval()
    out = method.training_step(_views(0), None)
    method.on_step_end(0, 0.0, out)
    state = method.state_dict()
    for key in ("queue.features", "queue.pointer", "queue.filled", "shuffle_seed"):
        assert key in state
    assert any(k.startswith("key_backbone.") for k in state)
    torch.manual_seed(1)
    restored = MoCoV2(build_backbone("convnet-small", 1), projection_dim=8,
                      projection_hidden_dim=16, queue_size=10)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.queue.ordered(), method.queue.ordered())
    assert int(restored.shuffle_seed) == int(method.shuffle_seed)


def test_defaults_shapes_and_errors() -> None:
    method = build_method("moco-v2", "convnet-small", 1)
    assert (method.temperature, method.ema_momentum, method.queue.size) == (0.2, 0.999, 65536)
    assert method.project(torch.randn(3, 1, 8, 8)).shape == (3, 128)
    with pytest.raises(ConfigError, match="queue_size must be >= 0"):
        build_method("moco-v2", "convnet-small", 1, queue_size=-1)
    with pytest.raises(ValueError, match="2 views"):
        method.training_step(_views(0) * 2, None)


def in_batch_direct(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """-1/N sum_i log exp(q_i.k_i/T) / sum_j exp(q_i.k_j/T), written out (q, k unit rows)."""
    q, k = q.detach().double(), k.detach().double()
    n = q.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        logits = torch.stack([q[i] @ k[j] / temperature for j in range(n)])
        total = total - logits[i] + torch.logsumexp(logits, 0)
    return total / n


@pytest.mark.parametrize("symmetric", [False, True])
def test_queue_size_zero_contrasts_with_the_other_keys_of_the_batch(symmetric: bool) -> None:
    """No queue: the negatives of q_i are the keys of the other images of the batch (MoCo v3's
    in-batch form without its 2 tau scale); nothing is enqueued and no queue is kept."""
    method = _method(queue_size=0, symmetric=symmetric).eval()
    assert method.queue is None and not any(k.startswith("queue.") for k in method.state_dict())
    x1, x2 = _views(0, n=6)
    method.on_step_start(0, 0.0)
    out = method.training_step([x1, x2], None)
    q1, k2 = _queries_and_keys(method, x1, x2)
    expected = in_batch_direct(q1, k2, 0.2)
    if symmetric:
        q2, k1 = _queries_and_keys(method, x2, x1)
        expected = 0.5 * (expected + in_batch_direct(q2, k1, 0.2))
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert out.after_step == {}
    out.loss.backward()
    assert all(p.grad is None for p in method.key_backbone.parameters())  # keys: no gradient
    assert all(p.grad is not None for p in method.backbone.parameters())
    method.on_step_end(0, 0.0, out)  # momentum update only


def test_queue_size_zero_is_allowed_with_any_batch() -> None:
    """The configuration allows queue_size 0 with any batch (no queue to fill)."""
    from contrastlab.config import TrainConfig

    config = TrainConfig.from_dict({"method": "moco-v2", "queue_size": 0, "batch_size": 256})
    assert config.method.queue_size == 0


def test_queue_size_zero_rows_of_each_rank_are_their_share_of_the_global_loss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP each rank contrasts its queries with the keys of the whole global batch, its
    positives at rank * n: the mean over the ranks is the one-process loss on the whole batch
    (ranks simulated by patching the rank the method reads)."""
    import contrastlab.methods.moco_v2 as moco_v2_module

    method = _method(queue_size=0).eval()
    generator = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(8, 8, generator=generator, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(8, 8, generator=generator, dtype=torch.float64), dim=1)
    whole = method.contrast(q, k, k)
    torch.testing.assert_close(whole, in_batch_direct(q, k, 0.2))
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(moco_v2_module, "rank", lambda rank=rank: rank)
        rows = slice(4 * rank, 4 * rank + 4)
        shares.append(method.contrast(q[rows], k[rows], k))
    torch.testing.assert_close((shares[0] + shares[1]) / 2, whole)
