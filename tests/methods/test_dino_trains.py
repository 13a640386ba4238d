from pathlib import Path

from training_check import assert_trains_without_collapse, train_two_short_epochs


def test_dino_trains_two_short_epochs_with_multi_crop_without_collapse(tmp_path: Path) -> None:
    # 6 local 4x4 crops of the 8x8 digits. For a run of 88 steps: a constant teacher temperature
    # (its warm-up raises the target entropy, hence the loss, over the schedule, which would hide
    # whether the student learns) and a teacher that follows faster (0.99, the paper's 0.996 is
    # for runs of 100+ epochs); global crops of 30-100% as in the MNIST recipe
    result = train_two_short_epochs("dino", tmp_path / "run", projection_dim=16,
                                    projection_hidden_dim=32, num_prototypes=64,
                                    freeze_prototypes_steps=4, teacher_temperature_warmup=0.0,
                                    ema_momentum=0.99, batch_size=32, crop_scale=[0.3, 1.0])
    assert_trains_without_collapse(result)
