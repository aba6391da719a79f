"""PriorDenoiser with a map of noise levels: each tile at the mean of its part of the map."""

import pytest
import torch

from blindfast.models import load_shipped_prior
from blindfast.restore import PriorDenoiser
from blindfast.restore.prior_denoiser import time_of_noise


class _TimePrior:
    """A stand-in prior whose estimate is the flow time it was given, per image: E[x_1 | x_t] := t."""

    def denoise(self, x_t, t):
        t = torch.as_tensor(t, dtype=x_t.dtype)
        return t.reshape(-1, 1, 1, 1).expand_as(x_t).clone()


def test_untiled_map_denoises_each_image_at_its_mean_level():
    v = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    level = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.1 + 0.01
    got = PriorDenoiser(_TimePrior(), tile=None, channels=3)(v, level)
    for b in range(2):
        expected = (time_of_noise(level[b].mean().item()) + 1) / 2
        torch.testing.assert_close(got[b], torch.full_like(got[b], expected), rtol=0, atol=1e-15)


def test_tiled_map_gives_each_tile_its_own_level():
    """Tiles of 8 without overlap on a 16x16 image: each quarter is (t + 1) / 2 for its own quarter's mean."""
    v = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    level = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.1 + 0.01
    got = PriorDenoiser(_TimePrior(), tile=8, overlap=0, channels=3)(v, level)
    for rows in (slice(0, 8), slice(8, 16)):
        for cols in (slice(0, 8), slice(8, 16)):
            expected = (time_of_noise(level[..., rows, cols].mean().item()) + 1) / 2
            torch.testing.assert_close(got[..., rows, cols], torch.full_like(got[..., rows, cols], expected),
                                       rtol=0, atol=1e-15)


def test_constant_map_equals_the_scalar_level():
    """The shipped prior on 160 px (two tiles of 128 with their overlap): a constant map is the scalar sigma."""
    denoiser = PriorDenoiser(load_shipped_prior("pixel_tiny"))
    v = torch.rand(1, 3, 160, 96, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(denoiser(v, torch.full((1, 1, 160, 96), 0.05)), denoiser(v, 0.05),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, value", [((1, 2, 8, 8), 0.1), ((1, 1, 8, 4), 0.1), ((1, 1, 8, 8), 0.0)])
def test_bad_map_is_refused(shape, value):
    with pytest.raises(ValueError, match=r"a sigma map must be \(B\|1, 1, H, W\)"):
        PriorDenoiser(_TimePrior(), tile=None, channels=3)(torch.rand(1, 3, 8, 8), torch.full(shape, value))
