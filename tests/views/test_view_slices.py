"""Distributed views: a rank's slice of a global batch's views equals those rows of the full
views bit for bit (every rank draws the global parameters, augments only its own rows)."""

from __future__ import annotations

import pytest
import torch

from contrastlab.views import AugmentConfig, AugmentedViews, MultiCropViews

#: every augmentation on, blur included (outputs >= blur_min_size), solarisation and rotation on
ALL_ON = AugmentConfig(jitter_p=0.9, grey_p=0.5, blur_p=0.5, solarize_p=0.5, blur_min_size=8,
                       rotation=20.0)


def _images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                         generator=generator)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("world", [2, 3])
def test_simclr_view_slices_equal_rows_of_the_full_batch(channels: int, world: int) -> None:
    images = _images(12, channels, 16)
    views = AugmentedViews(12, channels, [0.5] * channels, [0.25] * channels, ALL_ON, num_views=3)
    full = views(images, torch.Generator().manual_seed(3))
    per_rank = 12 // world
    for rank in range(world):
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        generator = torch.Generator().manual_seed(3)
        part = views(images[rows], generator, global_batch=12, offset=rows.start)
        for full_view, part_view in zip(full, part, strict=True):
            assert torch.equal(full_view[rows], part_view)
        # the shared generator advanced exactly as in the full-batch call
        assert torch.equal(generator.get_state(), _advanced_state(views, images, 3))


def _advanced_state(views: AugmentedViews, images: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    views(images, generator)
    return generator.get_state()


def test_multi_crop_view_slices_equal_rows_of_the_full_batch() -> None:
    images = _images(9, 3, 16, seed=1)
    views = MultiCropViews(12, 6, 3, [0.5] * 3, [0.25] * 3, ALL_ON, num_global=2, num_local=3)
    full = views(images, torch.Generator().manual_seed(5))
    for start, stop in ((0, 3), (3, 6), (6, 9)):
        part = views(images[start:stop], torch.Generator().manual_seed(5), global_batch=9,
                     offset=start)
        assert len(part) == 5
        for full_view, part_view in zip(full, part, strict=True):
            assert torch.equal(full_view[start:stop], part_view)


def test_jitter_plan_round_trips_through_its_per_sample_parameters() -> None:
    views = AugmentedViews(16, 3, [0.5] * 3, [0.25] * 3, ALL_ON)
    params = views.augment.sample_params(10, 16, 16, torch.Generator().manual_seed(0))
    whole = params.jitter.select(0, 10)
    for name in ("gather", "regather", "restore", "factors"):
        assert torch.equal(getattr(whole, name), getattr(params.jitter, name))
    assert whole.counts == params.jitter.counts


def test_a_slice_outside_the_global_batch_is_refused() -> None:
    views = AugmentedViews(8, 1, [0.5], [0.25])
    with pytest.raises(ValueError, match="global batch of 6"):
        views(_images(4, 1, 8), torch.Generator(), global_batch=6, offset=4)
    with pytest.raises(ValueError, match="without global_batch"):
        views(_images(4, 1, 8), torch.Generator(), offset=2)
