"""PriorDenoiser with a map of noise levels (each tile at the mean of its part of the map) and a shifted tile grid."""

import numpy as np
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


class _PointwisePrior:
    """A stand-in prior that acts on each pixel alone: E[x_1 | x_t] := tanh(x_t)."""

    def denoise(self, x_t, t):
        return torch.tanh(x_t)


@pytest.mark.parametrize("shift", [0, 3, 5])
def test_shifted_tiles_of_a_pointwise_prior_equal_it_untiled(shift):
    """Tiles of 8 with an overlap of 2 on 20x28, the grid moved by ``shift``: the blend of a pointwise prior is
    the prior on the whole image, (tanh(t (2 v - 1)) + 1) / 2."""
    v = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = time_of_noise(0.05)
    got = PriorDenoiser(_PointwisePrior(), tile=8, overlap=2, channels=3)(v, 0.05, shift=shift)
    torch.testing.assert_close(got, (torch.tanh(t * (2 * v - 1)) + 1) / 2, rtol=0, atol=1e-15)


def test_shifted_tiles_give_each_shifted_tile_its_own_level():
    """Tiles of 8 without overlap on 20x20 moved by 4: the image and its map extended by 4 reflected pixels at
    the top and left (numpy's reflect) are 24x24, three tiles per axis, so the output is constant on the blocks
    [-4, 4), [4, 12), [12, 20) of each axis, at the mean of the reflected map over the block."""
    v = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    level = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.1 + 0.01
    got = PriorDenoiser(_TimePrior(), tile=8, overlap=0, channels=3)(v, level, shift=4)
    extended = np.pad(level[0, 0].numpy(), ((4, 0), (4, 0)), mode="reflect")
    for top in (0, 8, 16):
        for left in (0, 8, 16):
            expected = (time_of_noise(extended[top:top + 8, left:left + 8].mean()) + 1) / 2
            block = got[..., max(top - 4, 0):top + 4, max(left - 4, 0):left + 4]
            torch.testing.assert_close(block, torch.full_like(block, expected), rtol=0, atol=1e-15)


def test_half_stride_and_bad_shift():
    denoiser = PriorDenoiser(_TimePrior(), tile=128, overlap=32, channels=3)
    assert denoiser.half_stride == 48 and PriorDenoiser(_TimePrior(), tile=None, channels=3).half_stride == 0
    for shift in (-1, 8, 1.5):
        with pytest.raises(ValueError, match=r"shift must be an int in \[0, 8\) .* got"):
            denoiser(torch.rand(1, 3, 8, 12), 0.1, shift=shift)
