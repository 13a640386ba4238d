from pathlib import Path

from training_check import assert_trains_without_collapse, train_two_short_epochs


def test_supervised_trains_two_short_epochs_without_collapse(tmp_path: Path) -> None:
    result = train_two_short_epochs("supervised", tmp_path / "run")
    assert_trains_without_collapse(result)
