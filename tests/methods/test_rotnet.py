import pytest
import torch

from contrastlab.losses import rotate_four_ways, rotation_prediction_loss
from contrastlab.methods import build_method
from contrastlab.methods.rotnet import RotNet
from contrastlab.models import build_backbone


def test_training_step_is_cross_entropy_of_the_four_rotations() -> None:
    torch.manual_seed(0)
    method = RotNet(build_backbone("convnet-small", 1), projection_hidden_dim=16)
    images = torch.randn(5, 1, 8, 8)
    out = method.training_step([images], None)
    rotated, labels = rotate_four_ways(images)
    expected = rotation_prediction_loss(method.classifier(method.backbone(rotated)), labels)
    torch.testing.assert_close(out.loss, expected)
    assert 0.0 <= out.metrics["rotation_accuracy"] <= 1.0
    out.loss.backward()
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)


def test_one_view_linear_classifier_and_encode() -> None:
    assert RotNet.num_views == 1
    method = build_method("rotnet", "convnet-small", 3, projection_hidden_dim=16).eval()
    x = torch.randn(2, 3, 16, 16)
    assert method.rotation_logits(x).shape == (2, 4)
    assert method.encode(x).shape == (2, method.feature_dim)
    torch.testing.assert_close(method.project(x), method.encode(x))
    linear = RotNet(build_backbone("convnet-small", 1), classifier_layers=1)
    assert sum(isinstance(m, torch.nn.Linear) for m in linear.classifier.modules()) == 1
    with pytest.raises(ValueError, match="exactly 1 view"):
        method.training_step([x, x], None)


def test_checkpoint_round_trip() -> None:
    torch.manual_seed(1)
    a = build_method("rotnet", "convnet-small", 1, projection_hidden_dim=16)
    a.training_step([torch.randn(4, 1, 8, 8)], None)  # moves batch-norm statistics
    b = build_method("rotnet", "convnet-small", 1, projection_hidden_dim=16)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(a.eval().rotation_logits(x), b.eval().rotation_logits(x))
