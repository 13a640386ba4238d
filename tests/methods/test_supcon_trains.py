from pathlib import Path

from training_check import assert_trains_without_collapse, train_two_short_epochs


def test_supcon_trains_two_short_epochs_without_collapse(tmp_path: Path) -> None:
    result = train_two_short_epochs("supcon", tmp_path / "run", projection_dim=16,
                                    projection_hidden_dim=32)
    assert_trains_without_collapse(result)


def test_supcon_with_one_view_per_image_trains_without_collapse(tmp_path: Path) -> None:
    result = train_two_short_epochs("supcon", tmp_path / "run", projection_dim=16,
                                    projection_hidden_dim=32, num_views=1)
    assert_trains_without_collapse(result)
