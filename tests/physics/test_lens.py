"""lens_psf_grid: valid kernels, seeded, sharp on axis, blurrier toward the corners, R out / B in, no subnormal
taps."""

import math

import pytest
import torch

from blindfast.ops import sv_conv
from blindfast.physics import lens_psf_grid

CORNERS = ((0, 0), (0, -1), (-1, 0), (-1, -1))


def _seeded(seed=0, **kwargs):
    return lens_psf_grid(generator=torch.Generator().manual_seed(seed), **kwargs)


def _moments(kernel):
    """(centre of mass (x, y), second moment about it) of a (k, k) kernel, in pixels from the window centre."""
    k = kernel.double()
    d = torch.arange(k.shape[-1], dtype=torch.float64) - k.shape[-1] // 2
    cx, cy = (k.sum(0) * d).sum(), (k.sum(1) * d).sum()
    second = (k * ((d[None, :] - cx) ** 2 + (d[:, None] - cy) ** 2)).sum()
    return torch.stack([cx, cy]), second


def _outward(i, j, grid):
    """Unit vector (x, y) from the image centre toward node (i, j) of a square grid."""
    n = grid - 1
    i, j = i % grid, j % grid
    v = torch.tensor([2 * j / n - 1, 2 * i / n - 1], dtype=torch.float64)
    return v / v.norm()


@pytest.mark.parametrize("grid, size, channels", [((8, 8), 31, 3), ((3, 5), 33, 1), ((1, 1), 15, 3)])
def test_shape_nonnegative_and_normalised(grid, size, channels):
    psf = _seeded(grid=grid, size=size, channels=channels)
    assert psf.shape == (1, channels, *grid, size, size)
    assert psf.dtype == torch.float32
    assert (psf >= 0).all()
    torch.testing.assert_close(psf.sum(dim=(-2, -1)), torch.ones(1, channels, *grid))


def test_dtype():
    assert _seeded(dtype=torch.float64).dtype == torch.float64


def test_deterministic_per_seed():
    torch.testing.assert_close(_seeded(3), _seeded(3), rtol=0, atol=0)
    assert not torch.equal(_seeded(3), _seeded(4))


def test_centre_node_is_sharper_than_corners():
    psf = _seeded(grid=(9, 9))[0]
    for c in range(3):
        _, centre = _moments(psf[c, 4, 4])
        for i, j in CORNERS:
            _, corner = _moments(psf[c, i, j])
            assert centre < corner / 4, (c, i, j)


def test_chromatic_shift_red_outward_blue_inward():
    psf = _seeded(grid=(8, 8))[0]
    for i, j in CORNERS:
        outward = _outward(i, j, 8)
        red, green, blue = (_moments(psf[c, i, j])[0] @ outward for c in range(3))
        assert red > green + 0.5 and blue < green - 0.5, (i, j, red, green, blue)


def test_subpixel_shift_is_exact():
    """Without skew, jitter or decentring, a corner's R kernel is a Gaussian moved by lateral_ca * r exactly."""
    shift = 0.3
    psf = lens_psf_grid(grid=(3, 3), size=41, coma=0.0, lateral_ca=shift, variation=0.0, decenter=0.0,
                        dtype=torch.float64)[0]
    expected = shift * torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2)   # r = 1 at node (2, 2)
    red, green, blue = (_moments(psf[c, 2, 2])[0] for c in range(3))
    torch.testing.assert_close(red, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(green, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(blue, -expected, rtol=0, atol=1e-6)


def test_window_too_small_raises():
    with pytest.raises(ValueError, match="size >= "):
        _seeded(size=15)


def test_preserves_a_constant_image_through_sv_conv():
    psf = _seeded(grid=(4, 4), size=31)
    y = sv_conv(torch.ones(1, 3, 64, 64), psf, padding="reflect")
    torch.testing.assert_close(y, torch.ones_like(y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("seed, grid, size", [(0, (8, 8), 31), (1, (3, 5), 41), (2, (8, 8), 63)])
def test_no_subnormal_taps(dtype, seed, grid, size):
    """Before the flush about 5% of the float32 taps were subnormal; each kernel still sums to 1 within one
    rounding."""
    psf = _seeded(seed, grid=grid, size=size, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    assert not ((psf != 0) & (psf < tiny)).any()
    if dtype != torch.float64:  # a float64 sum of 961+ float64 taps has its own rounding of the same size
        assert (psf.double().sum(dim=(-2, -1)) - 1).abs().max() <= torch.finfo(dtype).eps
