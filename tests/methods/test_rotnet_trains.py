from pathlib import Path

from centred_spread import assert_centred_features_spread, assert_losses_finite_and_decreasing
from training_check import train_two_short_epochs


def test_rotnet_trains_two_short_epochs_without_collapse(tmp_path: Path) -> None:
    result = train_two_short_epochs("rotnet", tmp_path / "run", projection_hidden_dim=32,
                                    lr=2e-3)
    assert_losses_finite_and_decreasing(result)
    assert_centred_features_spread(tmp_path / "run")
