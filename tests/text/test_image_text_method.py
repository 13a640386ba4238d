"""CLIP / SigLIP with an image tower and a text tower: the step's loss is the paper's formula of
the two towers' embeddings, computed here loop by loop; both towers get gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastlab.data.tokenizer import TokenBatch
from contrastlab.errors import ConfigError
from contrastlab.methods.image_text import (
    ImageTextBatch,
    TextTower,
    build_image_text_method,
    image_text_settings,
    image_text_step,
)
from contrastlab.models.backbones import build_backbone
from contrastlab.models.text_encoder import TextEncoderSettings, TextTransformer


def _towers(seed: int = 0) -> tuple[torch.nn.Module, TextTransformer]:
    torch.manual_seed(seed)
    image = build_backbone("convnet", 3)
    text = TextTransformer(30, TextEncoderSettings(dim=16, depth=1, heads=2, max_length=8,
                                                   dropout=0.0))
    return image, text


def _batch(n: int = 5) -> ImageTextBatch:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 30, (n, 6), generator=generator)
    mask = torch.ones(n, 6, dtype=torch.bool)
    mask[0, 4:] = False
    return ImageTextBatch(torch.randn(n, 3, 8, 8, generator=generator), TokenBatch(ids, mask))


def clip_by_loops(x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    """Radford et al. 2021, Figure 3, one cross-entropy term at a time."""
    x, y = F.normalize(x.double(), dim=1).tolist(), F.normalize(y.double(), dim=1).tolist()
    n = len(x)
    s = [[scale * sum(a * b for a, b in zip(x[i], y[j], strict=True)) for j in range(n)]
         for i in range(n)]
    total = 0.0
    for i in range(n):
        total -= s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n)))
        total -= s[i][i] - math.log(sum(math.exp(s[j][i]) for j in range(n)))
    return total / (2 * n)


def siglip_by_loops(x: torch.Tensor, y: torch.Tensor, t: float, b: float) -> float:
    """Zhai et al. 2023, Algorithm 1, pair by pair."""
    x, y = F.normalize(x.double(), dim=1).tolist(), F.normalize(y.double(), dim=1).tolist()
    n, total = len(x), 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = t * sum(a * c for a, c in zip(x[i], y[j], strict=True)) + b
            total -= math.log(1.0 / (1.0 + math.exp(-z * logit)))
    return total / n


def test_clip_step_is_the_clip_formula_of_the_towers() -> None:
    image, text = _towers()
    method = build_image_text_method("clip", image, text,
                                     image_text_settings("clip", {"temperature": 0.1}))
    batch = _batch()
    output = image_text_step(method, batch)
    with torch.no_grad():
        x = method.projection_a(image(batch.images))
        y = method.projection_b(text(batch.tokens.ids, batch.tokens.mask))
    assert float(output.loss.detach()) == pytest.approx(clip_by_loops(x, y, 10.0), rel=1e-5)
    assert output.metrics["logit_scale"] == pytest.approx(10.0, rel=1e-5)
    output.loss.backward()
    for name in ("backbone.features.0.weight", "tower_b.encoder.token_embed.weight",
                 "projection_a.weight", "projection_b.weight", "loss.log_scale"):
        grad = method.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_siglip_step_is_the_sigmoid_formula_of_the_towers() -> None:
    image, text = _towers(3)
    method = build_image_text_method("siglip", image, text, image_text_settings(
        "siglip", {"temperature": 0.2, "bias": -2.0}))
    batch = _batch(4)
    loss = float(image_text_step(method, batch).loss.detach())
    with torch.no_grad():
        x = method.embed_a(batch.images)
        y = method.embed_b(batch.tokens)
    assert loss == pytest.approx(siglip_by_loops(x, y, 5.0, -2.0), rel=1e-5)


def test_text_tower_and_batch_checks() -> None:
    _, text = _towers()
    tower = TextTower(text)
    assert tower.output_dim == 16
    tokens = _batch().tokens
    torch.testing.assert_close(tower(tokens), text(tokens.ids, tokens.mask))
    with pytest.raises(ValueError, match="5 images but 4 captions"):
        ImageTextBatch(torch.zeros(5, 3, 8, 8), TokenBatch(tokens.ids[:4], tokens.mask[:4]))
    with pytest.raises(ConfigError, match="unknown image-text method 'clap'.*clip"):
        image_text_settings("clap")
    with pytest.raises(ConfigError, match="unknown key 'bias'"):
        image_text_settings("clip", {"bias": 1.0})
