"""CLIP and SigLIP two-tower methods: towers, losses, learnable scale/bias, pluggable tower B."""

import math

import pytest
import torch
from torch import nn

from contrastlab.losses import clip_loss, siglip_loss
from contrastlab.methods import build_method
from contrastlab.methods.base import StepOutput
from contrastlab.methods.clip import CLIP
from contrastlab.methods.siglip import SigLIP
from contrastlab.methods.two_tower import fresh_copy
from contrastlab.models import build_backbone


def views(n: int = 6, size: int = 8) -> list[torch.Tensor]:
    return [torch.randn(n, 1, size, size), torch.randn(n, 1, size, size)]


@pytest.mark.parametrize("name", ["convnet-small", "vit-micro"])
def test_tower_b_is_a_fresh_copy_of_the_architecture(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, 1, **({"image_size": 8} if name.startswith("vit") else {}))
    if name == "convnet-small":  # move batch-norm statistics away from their initial values
        backbone(torch.randn(4, 1, 8, 8) + 3)
    tower = fresh_copy(backbone)
    assert type(tower) is type(backbone) and tower.output_dim == backbone.output_dim
    a, b = dict(backbone.named_parameters()), dict(tower.named_parameters())
    assert a.keys() == b.keys()
    weights = [k for k, v in a.items() if v.ndim > 1]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)
    assert all(a[k].data_ptr() != b[k].data_ptr() for k in a)
    for module in tower.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.running_mean == 0) and torch.all(module.running_var == 1)


def test_clip_step_is_clip_loss_of_the_two_towers() -> None:
    torch.manual_seed(1)
    method = build_method("clip", "convnet-small", 1, projection_dim=8)
    v1, v2 = views()
    out = method.training_step([v1, v2], None)
    a = method.projection_a(method.backbone(v1))
    b = method.projection_b(method.tower_b(v2))
    torch.testing.assert_close(out.loss, clip_loss(a, b, method.loss.log_scale))
    assert out.metrics["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)
    out.loss.backward()
    for name, parameter in method.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_siglip_step_is_siglip_loss_of_the_two_towers() -> None:
    torch.manual_seed(2)
    method = build_method("siglip", "convnet-small", 1, projection_dim=8)
    v1, v2 = views()
    out = method.training_step([v1, v2], None)
    a = method.projection_a(method.backbone(v1))
    b = method.projection_b(method.tower_b(v2))
    torch.testing.assert_close(out.loss,
                               siglip_loss(a, b, method.loss.log_temperature, method.loss.bias))
    assert out.metrics["siglip_t"] == pytest.approx(10.0, rel=1e-5)
    assert out.metrics["siglip_bias"] == pytest.approx(-10.0)
    out.loss.backward()
    assert method.loss.log_temperature.grad.abs() > 0 and method.loss.bias.grad.abs() > 0
    custom = build_method("siglip", "convnet-small", 1, temperature=0.5)
    assert custom.loss.log_temperature.item() == pytest.approx(math.log(2.0))


def test_clip_scale_is_clipped_after_the_step() -> None:
    method = build_method("clip", "convnet-small", 1, temperature=0.001)
    assert method.loss.log_scale.item() == pytest.approx(math.log(1000))
    method.on_step_end(0, 0.0, StepOutput(loss=torch.zeros(())))
    assert method.loss.log_scale.item() == pytest.approx(math.log(100))


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_encode_is_tower_a_and_state_round_trips(name: str) -> None:
    torch.manual_seed(3)
    a = build_method(name, "convnet-small", 1, projection_dim=8)
    a.training_step(views(), None)
    with torch.no_grad():
        for parameter in a.loss.parameters():
            parameter.add_(0.5)  # learned scale / bias away from their initial values
    b = build_method(name, "convnet-small", 1, projection_dim=8)
    b.load_state_dict(a.state_dict())
    assert any(k.startswith("tower_b.") for k in a.state_dict())
    x = torch.randn(3, 1, 8, 8)
    a.eval()
    b.eval()
    torch.testing.assert_close(a.encode(x), a.backbone(x))
    torch.testing.assert_close(b.encode(x), a.encode(x))
    torch.testing.assert_close(b.project(x), a.project(x))
    assert a.project(x).shape == (3, 8)
    for key, value in a.loss.state_dict().items():
        assert torch.equal(b.loss.state_dict()[key], value), key
    with pytest.raises(ValueError, match="exactly 2 views"):
        a.training_step(views()[:1], None)


class BagOfWordsTower(nn.Module):
    """A stand-in text tower: token ids (N, T) -> mean of word embeddings."""

    def __init__(self, vocabulary: int = 50, dim: int = 12) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocabulary, dim)
        self.output_dim = dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens)


@pytest.mark.parametrize("cls", [CLIP, SigLIP])
def test_a_text_tower_plugs_in_as_tower_b(cls: type) -> None:
    torch.manual_seed(4)
    method = cls(build_backbone("convnet-small", 1), projection_dim=8,
                 tower_b=BagOfWordsTower())
    images, tokens = torch.randn(5, 1, 8, 8), torch.randint(0, 50, (5, 7))
    out = method.pair_loss(method.embed_a(images), method.embed_b(tokens))
    out.loss.backward()
    assert method.tower_b.embedding.weight.grad is not None
    with pytest.raises(ValueError, match="output_dim"):
        cls(build_backbone("convnet-small", 1), tower_b=nn.Identity())
