from pathlib import Path

from training_check import assert_trains_without_collapse, train_two_short_epochs


def test_swav_trains_two_short_epochs_with_multi_crop_without_collapse(tmp_path: Path) -> None:
    # digits are 8x8: the 6 local crops are 4x4 (round(3/7 * 8), at least 4). Global crops of
    # 30-100% (as the MNIST recipe): with the default 8-100%, 2x2-pixel crops made the running
    # batch-norm statistics so unlike the evaluation images that the eval-mode embeddings sat
    # just under the collapse threshold (0.119 for 0.125) although they were spread in training
    result = train_two_short_epochs("swav", tmp_path / "run", projection_dim=16,
                                    projection_hidden_dim=32, num_prototypes=32,
                                    freeze_prototypes_steps=4, crop_scale=[0.3, 1.0])
    assert_trains_without_collapse(result)
