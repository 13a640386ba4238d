import math

import pytest
import torch

from contrastlab.eval import knn_accuracy, knn_predict, linear_probe, score_features


def knn_direct(train, train_labels, query, k, temperature, num_classes):
    """Wu et al. 2018 weighted voting, one query at a time."""
    sims = []
    for i in range(train.shape[0]):
        cos = float(torch.dot(query, train[i]) / (query.norm() * train[i].norm()))
        sims.append((cos, int(train_labels[i])))
    sims.sort(key=lambda item: -item[0])
    votes = [0.0] * num_classes
    for cos, label in sims[:k]:
        votes[label] += math.exp(cos / temperature)
    return max(range(num_classes), key=lambda c: votes[c])


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.07)])
def test_knn_matches_direct_weighted_vote(k: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(k)
    train = torch.randn(60, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (60,), generator=generator)
    queries = torch.randn(25, 8, generator=generator, dtype=torch.float64)
    ours = knn_predict(train, labels, queries, k=k, temperature=temperature, num_classes=4,
                       chunk_size=7)
    direct = [knn_direct(train, labels, q, k, temperature, 4) for q in queries]
    assert ours.tolist() == direct


def test_knn_is_perfect_on_separated_clusters() -> None:
    torch.manual_seed(0)
    centres = torch.eye(5) * 10
    labels = torch.arange(5).repeat_interleave(30)
    features = centres[labels] + torch.randn(150, 5)
    test_labels = torch.arange(5).repeat_interleave(10)
    test = centres[test_labels] + torch.randn(50, 5)
    assert knn_accuracy(features, labels, test, test_labels, k=10) == 1.0


def test_linear_probe_separable_and_chance() -> None:
    torch.manual_seed(0)
    labels = torch.arange(3).repeat_interleave(100)
    features = torch.randn(300, 10)
    features[:, 0] += 5 * labels  # linearly separable along one axis
    test_labels = torch.arange(3).repeat_interleave(30)
    test = torch.randn(90, 10)
    test[:, 0] += 5 * test_labels
    result = linear_probe(features, labels, test, test_labels)
    assert result["linear_top1"] > 0.95 and result["linear_C"] in (0.1, 1.0, 10.0)
    noise = linear_probe(torch.randn(300, 10), labels, torch.randn(90, 10), test_labels)
    assert noise["linear_top1"] < 0.6


def test_score_features_rejects_unknown_protocol() -> None:
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(ValueError, match="unknown protocol"):
        score_features(x, y, x, y, protocols=("svm",))


def test_end_of_training_figures_equal_the_eval_commands(tmp_path) -> None:
    """The same protocol on the same features gives the same figure: what training prints at the
    end (channels_last, fp64 here) is what `contrastlab eval` gives on the saved run."""
    import json

    from rich.console import Console

    import contrastlab
    from contrastlab.eval.runs import evaluate_run

    out = tmp_path / "run"
    contrastlab.train(data="digits", backbone="convnet-small", epochs=1, batch_size=64,
                      projection_hidden_dim=32, knn_k=20, diagnose_every=0, precision="fp64",
                      out=str(out), console=Console(quiet=True))
    final = json.loads((out / "final_metrics.json").read_text())
    again = evaluate_run(out, ("knn", "linear"), k=20)
    assert (again["knn_top1"], again["linear_top1"]) == (final["knn_top1"],
                                                          final["linear_top1"])
