from pathlib import Path

from centred_spread import assert_centred_features_spread, assert_losses_finite_and_decreasing
from training_check import train_two_short_epochs


def test_mae_trains_two_short_epochs_without_collapse(tmp_path: Path) -> None:
    # crop + flip only, as in the paper
    result = train_two_short_epochs("mae", tmp_path / "run", backbone="vit-micro", lr=2e-3,
                                    jitter_p=0.0, grey_p=0.0, blur_p=0.0)
    assert_losses_finite_and_decreasing(result)
    assert_centred_features_spread(tmp_path / "run")
