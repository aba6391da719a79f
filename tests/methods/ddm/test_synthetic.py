"""The synthetic camera: sharp and blurry frames from disjoint halves of every photo, blurred by sv_conv."""

import torch

from blindfast.methods.ddm.synthetic import capture, frames_of, halves
from blindfast.ops import sv_conv
from blindfast.physics import lens_psf_grid


def test_halves_split_the_longer_side_and_frames_tile_a_photo():
    wide = torch.arange(2 * 10 * 16.0).reshape(2, 10, 16)
    left, right = halves(wide)
    assert torch.equal(torch.cat([left, right], dim=2), wide) and left.shape[-1] == 8
    top, bottom = halves(wide.transpose(1, 2))
    assert top.shape[-2:] == (8, 10) and torch.equal(torch.cat([top, bottom], dim=1), wide.transpose(1, 2))
    frames = frames_of(wide, 4, 3)
    assert len(frames) == 3 * 5                       # corners at rows 0, 3, 6 and columns 0, 3, 6, 9, 12
    assert torch.equal(frames[6], wide[:, 3:7, 3:7])


def test_capture_is_sv_conv_plus_the_stated_noise():
    grid = lens_psf_grid((2, 2), 9, 3, generator=torch.Generator().manual_seed(0), sigma0=0.5, field_blur=0.3,
                         astigmatism=0.2, coma=1.0, lateral_ca=0.3)
    scenes = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    captured = capture(scenes, grid, 0.02, torch.Generator().manual_seed(2))
    noise = captured - sv_conv(scenes, grid, padding="reflect")
    expected = 0.02 * torch.randn(captured.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(noise, expected, rtol=0, atol=1e-6)
