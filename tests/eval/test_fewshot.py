"""N-way K-shot nearest-prototype evaluation: classifier, episodes, confidence interval, run."""

import math
import statistics
from pathlib import Path

import pytest
import torch
from rich.console import Console

from contrastlab import train
from contrastlab.config import build_config
from contrastlab.errors import ConfigError, DataError
from contrastlab.eval.fewshot import (
    confidence_interval_95,
    fewshot_evaluate,
    fewshot_run,
    prototype_predict,
    sample_episode,
)
from contrastlab.eval.threads import single_thread_if_small


def prototype_direct(support, support_labels, query, num_classes):
    """Cosine to the mean of L2-normalised support features, one query and class at a time."""
    def unit(v):
        norm = math.sqrt(sum(float(a) ** 2 for a in v))
        return [float(a) / norm for a in v]

    prototypes = []
    for c in range(num_classes):
        members = [unit(s) for s, y in zip(support, support_labels, strict=True) if int(y) == c]
        prototypes.append([sum(col) / len(members) for col in zip(*members, strict=True)])
    predictions = []
    for q in query:
        cosines = []
        for p in prototypes:
            dot = sum(a * b for a, b in zip(unit(q), p, strict=True))
            cosines.append(dot / math.sqrt(sum(b * b for b in p)))
        predictions.append(max(range(num_classes), key=lambda c: cosines[c]))
    return predictions


@pytest.mark.parametrize("ways,shots", [(2, 1), (5, 1), (5, 5), (3, 4)])
def test_prototype_classifier_matches_direct_loop(ways: int, shots: int) -> None:
    generator = torch.Generator().manual_seed(ways * 10 + shots)
    support = torch.randn(ways * shots, 7, generator=generator, dtype=torch.float64) * 3 + 1
    labels = torch.arange(ways).repeat_interleave(shots)
    query = torch.randn(40, 7, generator=generator, dtype=torch.float64) + 1
    ours = prototype_predict(support, labels, query, ways)
    assert ours.tolist() == prototype_direct(support, labels, query, ways)


def test_confidence_interval_formula() -> None:
    accuracies = torch.tensor([0.8, 0.6, 1.0, 0.9, 0.7, 0.75, 0.95])
    expected = 1.96 * statistics.pstdev(accuracies.tolist()) / math.sqrt(7)
    assert confidence_interval_95(accuracies) == pytest.approx(expected, rel=1e-6)
    assert confidence_interval_95(torch.full((600,), 0.4)) == 0.0


def test_episodes_are_disjoint_and_seeded() -> None:
    members = [torch.arange(c * 30, c * 30 + 30) for c in range(8)]
    one = sample_episode(members, 5, 2, 3, torch.Generator().manual_seed(0))
    two = sample_episode(members, 5, 2, 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    support, support_y, query, query_y = one
    assert len(support) == 10 and len(query) == 15
    assert not set(support.tolist()) & set(query.tolist())
    # episode labels 0..N-1 stand for N distinct original classes
    originals = {int(i) // 30 for i in support}
    assert len(originals) == 5
    for label in range(5):
        classes = {int(i) // 30 for i in torch.cat([support[support_y == label],
                                                    query[query_y == label]])}
        assert len(classes) == 1


def test_fewshot_separable_random_and_independent_of_other_shots() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(30)
    separated = torch.eye(10)[labels] * 5 + 0.1 * torch.randn(300, 10, generator=generator)
    (perfect,) = fewshot_evaluate(separated, labels, ways=5, shots=(1,), episodes=50)
    assert perfect.mean == 1.0 and perfect.ci95 == 0.0
    noise = torch.randn(300, 16, generator=generator)
    one, five = fewshot_evaluate(noise, labels, ways=5, shots=(1, 5), episodes=300, queries=10)
    assert abs(one.mean - 0.2) < 0.03 and abs(five.mean - 0.2) < 0.03
    (alone,) = fewshot_evaluate(noise, labels, ways=5, shots=(5,), episodes=300, queries=10)
    assert alone.mean == five.mean and alone.ci95 == five.ci95 and five.ci95 > 0


def test_fewshot_errors() -> None:
    labels = torch.arange(4).repeat_interleave(10)
    features = torch.randn(40, 3)
    with pytest.raises(DataError, match="need 5 classes"):
        fewshot_evaluate(features, labels, ways=5, shots=(1,), queries=5)
    with pytest.raises(DataError, match="at least 16 test images"):
        fewshot_evaluate(features, labels, ways=2, shots=(1,), queries=15)
    with pytest.raises(ConfigError, match="--ways"):
        fewshot_evaluate(features, labels, ways=1)
    with pytest.raises(ConfigError, match="--shots"):
        fewshot_evaluate(features, labels, shots=(0,))
    with pytest.raises(ConfigError, match="--episodes"):
        fewshot_evaluate(features, labels, episodes=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fewshot") / "run"
    config = build_config(None, {"data": "digits", "epochs": 1, "batch_size": 64,
                                 "backbone": "convnet-small", "projection_hidden_dim": 32,
                                 "projection_dim": 16, "out": str(out)})
    with single_thread_if_small(0):  # tiny steps: one thread is faster on a busy CPU
        train(config, console=Console(quiet=True), stop_after_step=2, evaluate_at_end=False)
    return out


@pytest.mark.parametrize("features", ["backbone", "projector"])
def test_fewshot_run_on_a_trained_run(tiny_run: Path, features: str) -> None:
    scores = fewshot_run(tiny_run, ways=5, shots=[1, 5], episodes=30, queries=10,
                         features=features)
    for k in (1, 5):
        assert 0.2 < scores[f"fewshot_5way_{k}shot_top1"] <= 1.0  # better than chance
        assert 0 < scores[f"fewshot_5way_{k}shot_ci95"] < 0.2
    assert scores["n_test"] == 360 and scores["episodes"] == 30
    assert ("features" in scores) == (features == "projector")
