"""The collapse alarm on synthetic embeddings: healthy, completely and dimensionally collapsed."""

import pytest
import torch

from contrastlab.eval.collapse import COMPLETE, DIMENSIONAL, CollapseMonitor
from contrastlab.eval.diagnostics import diagnose_embeddings

N, D = 400, 64


def views_of(z, seed, noise_level=0.05):
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    scale = noise_level * z.std(dim=0).mean()  # small next to the spread between images
    return z + scale * noise, z + scale * noise.roll(1, 0)


def healthy(seed=0):
    z = torch.randn(N, D, generator=torch.Generator().manual_seed(seed))
    return diagnose_embeddings(*views_of(z, seed + 100))


def completely_collapsed(seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(1, D, generator=generator) + 1e-4 * torch.randn(N, D, generator=generator)
    return diagnose_embeddings(*views_of(z, seed + 100))


def dimensionally_collapsed(seed=0, directions=2):
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(directions, D, generator=generator)
    z = torch.randn(N, directions, generator=generator) @ basis
    # RankMe counts every non-zero singular value, so the isotropic noise is kept small here
    # (0.5%: rank 2.4 of 64); with 5% noise the same embeddings read as rank 6 (9.8%)
    return diagnose_embeddings(*views_of(z, seed + 100, noise_level=0.005))


def both_spaces(space):
    return {"projector": space, "backbone": healthy(7)}


def test_synthetic_embeddings_have_the_expected_signs():
    assert healthy()["normalized_std_ratio"] > 0.9
    assert healthy()["effective_rank_ratio"] > 0.5
    assert completely_collapsed()["normalized_std_ratio"] < 0.01
    assert completely_collapsed()["negative_cosine"] > 0.99
    assert dimensionally_collapsed()["effective_rank"] < 3.0
    assert dimensionally_collapsed()["normalized_std_ratio"] > 0.1


def test_healthy_embeddings_never_raise_the_alarm():
    monitor = CollapseMonitor(patience=1)
    for seed in range(5):
        assert monitor.update({"projector": healthy(seed), "backbone": healthy(seed + 50)},
                              epoch=seed) is None


def test_complete_collapse_fires_after_patience_once_with_causes():
    monitor = CollapseMonitor(patience=3, method="simclr")
    assert monitor.update(both_spaces(completely_collapsed(0)), epoch=10) is None
    assert monitor.update(both_spaces(completely_collapsed(1)), epoch=20) is None
    alarm = monitor.update(both_spaces(completely_collapsed(2)), epoch=30)
    assert alarm is not None and alarm.kind == COMPLETE and alarm.space == "projector"
    assert alarm.message.startswith("complete collapse in 3 evaluations in a row (epochs 10, "
                                    "20, 30)")
    assert "1/sqrt(64)" in alarm.message and "same embedding" in alarm.message
    assert "temperature" in alarm.message and "learning rate" in alarm.message
    assert monitor.update(both_spaces(completely_collapsed(3)), epoch=40) is None  # said once
    record = alarm.to_record()
    assert set(record) == {"kind", "space", "message"}


def test_dimensional_collapse_is_told_apart_from_complete_collapse():
    monitor = CollapseMonitor(patience=2)
    assert monitor.update(both_spaces(dimensionally_collapsed(0))) is None
    alarm = monitor.update(both_spaces(dimensionally_collapsed(1)))
    assert alarm is not None and alarm.kind == DIMENSIONAL
    assert "effective rank" in alarm.message and "out of 64 dimensions" in alarm.message
    assert "projector that is too small" in alarm.message
    assert "epoch" not in alarm.message.split(":")[0]  # no epochs given, none invented


def test_a_healthy_evaluation_resets_the_streak():
    monitor = CollapseMonitor(patience=2)
    assert monitor.update(both_spaces(completely_collapsed(0))) is None
    assert monitor.update(both_spaces(healthy(1))) is None
    assert monitor.update(both_spaces(completely_collapsed(2))) is None
    assert monitor.update(both_spaces(completely_collapsed(3))) is not None


def test_collapse_in_the_backbone_alone_is_caught_and_gets_worse():
    monitor = CollapseMonitor(patience=2, method="simsiam")
    first = {"projector": healthy(0), "backbone": dimensionally_collapsed(1)}
    assert monitor.update(first, epoch=1) is None
    alarm = monitor.update({"projector": healthy(2), "backbone": dimensionally_collapsed(3)},
                           epoch=2)
    assert alarm is not None and (alarm.kind, alarm.space) == (DIMENSIONAL, "backbone")
    assert "Usual causes: SimSiam needs both its predictor" in alarm.message
    # it worsens into complete collapse: a second alarm, with the method's own cause first
    collapsed = {"projector": completely_collapsed(4), "backbone": completely_collapsed(5)}
    assert monitor.update(collapsed, epoch=3) is None
    alarm = monitor.update(collapsed, epoch=4)
    assert alarm is not None and alarm.kind == COMPLETE
    assert "Usual causes: SimSiam needs both its predictor and the stop-gradient" in alarm.message


def test_non_finite_diagnostics_are_not_called_collapse():
    broken = diagnose_embeddings(torch.full((10, 4), float("nan")),
                                 torch.full((10, 4), float("nan")))
    monitor = CollapseMonitor(patience=1)
    assert monitor.update({"projector": broken}) is None


@pytest.mark.parametrize("kwargs", [{"threshold_rank": 0.0}, {"threshold_std": 1.5},
                                    {"patience": 0}])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        CollapseMonitor(**kwargs)


def test_evaluations_in_the_grace_period_are_not_counted():
    monitor = CollapseMonitor(patience=2, grace=0.1)
    collapsed = both_spaces(completely_collapsed(0))
    assert monitor.update(collapsed, epoch=1, progress=0.03) is None  # a fresh network
    assert monitor.update(collapsed, epoch=2, progress=0.06) is None
    assert monitor.collapsed_streak == 0
    assert monitor.update(collapsed, epoch=3, progress=0.1) is None
    alarm = monitor.update(collapsed, epoch=4, progress=0.13)
    assert alarm is not None and "(epochs 3, 4)" in alarm.message
