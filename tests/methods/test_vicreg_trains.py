from pathlib import Path

from training_check import assert_trains_without_collapse, train_two_short_epochs


def test_vicreg_trains_two_short_epochs_without_collapse(tmp_path: Path) -> None:
    result = train_two_short_epochs("vicreg", tmp_path / "run", projection_dim=32,
                                    projection_hidden_dim=64, lr=3e-3)
    assert_trains_without_collapse(result)
