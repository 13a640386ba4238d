"""CLIP and SigLIP train through the real trainer without collapsing.

Two separately initialised towers must learn to agree, which the default views of 8x8 digits
(crops of 8-100% of the image, colour jitter, blur) make too hard for two short epochs, so the
pairs here are milder: crops of 50-100% and flips only. Besides the shared check (finite,
decreasing loss; spread of the normalised embeddings), collapse is checked on the loss itself:
constant embeddings give its collapsed value (CLIP: log N; SigLIP: log N + (N - 1) log(N/(N-1)),
the optimum over t and b), and the last steps must be clearly below it.
"""

import math
from pathlib import Path

import pytest
from training_check import assert_trains_without_collapse, train_two_short_epochs

BATCH = 64
COLLAPSED = {
    "clip": math.log(BATCH),
    "siglip": math.log(BATCH) + (BATCH - 1) * math.log(BATCH / (BATCH - 1)),
}


@pytest.mark.parametrize("method", ["clip", "siglip"])
def test_two_tower_method_trains_two_short_epochs_without_collapse(method: str,
                                                                   tmp_path: Path) -> None:
    result = train_two_short_epochs(method, tmp_path / "run", projection_dim=16, lr=3e-3,
                                    batch_size=BATCH, crop_scale=(0.5, 1.0), jitter_p=0.0,
                                    grey_p=0.0, blur_p=0.0)
    assert_trains_without_collapse(result)
    last = result["step_losses"][-5:]
    assert sum(last) / len(last) < 0.9 * COLLAPSED[method], (last, COLLAPSED[method])
