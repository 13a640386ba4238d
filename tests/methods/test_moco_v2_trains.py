from pathlib import Path

from training_check import assert_trains_without_collapse, train_two_short_epochs


def test_moco_v2_trains_two_short_epochs_without_collapse(tmp_path: Path) -> None:
    # MoCo learns more slowly than SimCLR at the start (its negatives come from an older key
    # encoder): a queue of 2 batches, momentum 0.9, batch 32 (2 x 44 steps) and the wider
    # ConvNet make the two short epochs enough (the loss fell in 3 of 3 seeds).
    result = train_two_short_epochs("moco-v2", tmp_path / "run", backbone="convnet",
                                    batch_size=32, lr=2e-3, crop_scale=(0.3, 1.0),
                                    projection_dim=16, projection_hidden_dim=32, queue_size=64,
                                    ema_momentum=0.9)
    assert_trains_without_collapse(result)
