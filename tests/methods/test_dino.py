"""DINO method: loss wiring, teacher (no gradient, EMA), centre, temperatures, state."""

from __future__ import annotations

import pytest
import torch

from contrastlab.losses import dino_loss, updated_center
from contrastlab.methods import build_method
from contrastlab.methods.dino import DINO
from contrastlab.models import build_backbone
from contrastlab.models.ema import cosine_momentum


def small_dino(**kwargs) -> DINO:
    torch.manual_seed(0)
    options = {"projection_dim": 8, "projection_hidden_dim": 16, "num_prototypes": 12}
    options.update(kwargs)
    method = build_method("dino", "convnet-small", 1, **options)
    assert isinstance(method, DINO)
    return method


def multi_crop_views(batch: int = 6, local: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return ([torch.randn(batch, 1, 8, 8, generator=gen) for _ in range(2)]
            + [torch.randn(batch, 1, 4, 4, generator=gen) for _ in range(local)])


def test_defaults_follow_the_paper() -> None:
    method = DINO(build_backbone("convnet-small", 1))
    assert method.criterion.student_temperature == 0.1
    assert (method.warmup_teacher_temperature, method.teacher_temperature) == (0.04, 0.07)
    assert method.teacher_temperature_warmup == 0.3
    assert method.criterion.center_momentum == 0.9
    assert (method.ema_momentum, method.ema_cosine) == (0.996, True)
    assert method.head.mlp[0].out_features == 512 and method.head.mlp[-1].out_features == 256
    assert method.head.output_dim == 1024
    assert (method.num_views, method.default_local_crops, method.supports_multi_crop) == (2, 6,
                                                                                          True)


def test_head_last_layer_is_weight_normalised_with_unit_magnitude() -> None:
    head = small_dino().head
    torch.testing.assert_close(head.last_layer_weight().norm(dim=1), torch.ones(12))
    names = {name for name, _ in head.named_parameters()}
    assert not any("weight_g" in name or "magnitude" in name for name in names)
    with torch.no_grad():
        head.last_layer_direction.mul_(5.0)  # scaling the direction changes nothing
    x = torch.randn(4, head.mlp[0].in_features)
    before = head(x)
    with torch.no_grad():
        head.last_layer_direction.mul_(0.1)
    torch.testing.assert_close(head(x), before)


def test_training_step_is_dino_loss_of_student_all_views_teacher_global_views() -> None:
    method = small_dino()
    views = multi_crop_views()
    method.on_step_start(60, 0.1)
    out = method.training_step(views, None)
    with torch.no_grad():
        student = torch.cat([method.head(method.backbone(torch.cat(views[:2]))),
                             method.head(method.backbone(torch.cat(views[2:])))]).view(5, 6, 12)
        teacher = method.teacher_head(method.teacher_backbone(torch.cat(views[:2]))).view(2, 6, 12)
        tau_t = 0.04 + (0.07 - 0.04) * 0.1 / 0.3
        expected = dino_loss(student, teacher, method.criterion.center, 0.1, tau_t)
    torch.testing.assert_close(out.loss.detach(), expected)
    assert out.metrics["teacher_temperature"] == pytest.approx(tau_t)


def test_teacher_gets_no_gradient_and_is_not_optimised() -> None:
    method = small_dino(freeze_prototypes_steps=0)
    method.training_step(multi_crop_views(), None).loss.backward()
    teacher = [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]
    assert teacher and all(not p.requires_grad and p.grad is None for p in teacher)
    student = [*method.backbone.parameters(), *method.head.parameters()]
    assert all(p.grad is not None for p in student)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in teacher}


def test_last_layer_frozen_during_the_first_steps() -> None:
    method = small_dino(freeze_prototypes_steps=2)
    for step, frozen in ((0, True), (1, True), (2, False)):
        method.zero_grad(set_to_none=True)
        method.on_step_start(step, 0.0)
        method.training_step(multi_crop_views(seed=step), None).loss.backward()
        grad = method.head.last_layer_direction.grad
        assert (grad is None) == frozen, step
        assert method.head.mlp[0].weight.grad is not None


def test_ema_and_center_updates_after_the_step() -> None:
    method = small_dino()
    views = multi_crop_views()
    with torch.no_grad():  # make the student differ from the teacher, as after a step
        for p in method.head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    old_teacher = [p.clone() for p in method.teacher_head.parameters()]
    student = [p.clone() for p in method.head.parameters()]
    old_center = method.criterion.center.clone()
    progress = 0.25
    method.on_step_start(5, progress)
    out = method.training_step(views, None)
    with torch.no_grad():
        teacher_out = method.teacher_head(method.teacher_backbone(torch.cat(views[:2])))
    method.on_step_end(5, progress, out)
    m = cosine_momentum(0.996, progress)
    for new, old, s in zip(method.teacher_head.parameters(), old_teacher, student, strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * s)
    torch.testing.assert_close(method.criterion.center,
                               updated_center(old_center, teacher_out, 0.9))
    expected_center = 0.9 * old_center + 0.1 * teacher_out.mean(dim=0, keepdim=True)
    torch.testing.assert_close(method.criterion.center, expected_center)


def test_constant_momentum_and_temperature_endpoints() -> None:
    method = small_dino(ema_cosine=False, ema_momentum=0.99, teacher_temperature_warmup=0.5)
    for progress, tau in ((0.0, 0.04), (0.25, 0.055), (0.5, 0.07), (1.0, 0.07)):
        method.on_step_start(0, progress)
        assert method.current_teacher_temperature() == pytest.approx(tau)
        assert method.current_ema_momentum() == 0.99
    cosine = small_dino()
    cosine.on_step_start(0, 0.0)
    assert cosine.current_ema_momentum() == pytest.approx(0.996)
    cosine.on_step_start(0, 1.0)
    assert cosine.current_ema_momentum() == pytest.approx(1.0)


def test_state_dict_round_trip_includes_teacher_and_center() -> None:
    method = small_dino()
    method.on_step_start(0, 0.0)
    out = method.training_step(multi_crop_views(), None)
    method.on_step_end(0, 0.0, out)
    state = method.state_dict()
    assert "criterion.center" in state
    assert any(key.startswith("teacher_backbone.") for key in state)
    assert "teacher_head.last_layer_direction" in state
    assert state["criterion.center"].abs().sum() > 0
    clone = small_dino()
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.criterion.center, method.criterion.center)
    for a, b in zip(clone.teacher_head.parameters(), method.teacher_head.parameters(),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_shapes_and_two_views_without_local_crops() -> None:
    method = small_dino()
    assert torch.isfinite(method.training_step(multi_crop_views(local=0), None).loss)
    method.eval()
    x = torch.randn(3, 1, 8, 8)
    assert method.encode(x).shape == (3, method.feature_dim)
    assert method.project(x).shape == (3, 12)
    with pytest.raises(ValueError, match="global views"):
        method.training_step(multi_crop_views()[:1], None)


def test_head_layers_sets_the_depth_of_the_heads_mlp() -> None:
    """--head-layers (DINO's nlayers, 3 in the paper): linear layers before the normalised
    last layer, in the student and its teacher; a flag and a YAML key without other changes."""
    from contrastlab.config import build_config

    def linear_layers(head: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.Linear) for m in head.mlp)

    assert linear_layers(small_dino().head) == 3
    method = small_dino(head_layers=1)
    assert linear_layers(method.head) == linear_layers(method.teacher_head) == 1
    assert method.head.mlp[0].in_features == method.backbone.output_dim
    assert build_config(None, {"method": "dino", "head_layers": 2}).method.head_layers == 2
    with pytest.raises(ValueError, match="head_layers must be >= 1, got 0"):
        small_dino(head_layers=0)
