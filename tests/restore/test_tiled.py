"""restore_tiled: linear solvers on tiles equal the whole-image solve within a stated tolerance; a PSF grid stays
tied to absolute positions; a tile smaller than the kernel is refused."""

import pytest
import torch

from blindfast.data import embedded_images
from blindfast.ops import sv_conv
from blindfast.physics import Blur, SpaceVaryingBlur, lens_psf_grid, motion_kernel
from blindfast.restore import cg_tikhonov, restore_tiled, tile_params, wiener


def _lens(grid, size, generator):
    """The demo lens's PSF shapes, widths scaled from its 31 px window to ``size``."""
    scale = size / 31
    return lens_psf_grid(grid, size, channels=3, generator=generator, dtype=torch.float64, sigma0=0.8 * scale,
                         field_blur=1.6 * scale, astigmatism=1.2 * scale, coma=3.0 * scale, lateral_ca=1.5 * scale)


def _photo(size=128):
    return embedded_images("test")[1][None, :, 100:100 + size, 150:150 + size].contiguous().double()


def test_tile_params_keep_the_psf_field_of_absolute_positions():
    """Inside a tile (away from its border by the kernel radius), the tile's blur with its own grid equals the
    full image's blur: each tile sees its own part of the field."""
    x = _photo()
    psf_grid = _lens((4, 4), 13, torch.Generator().manual_seed(0))
    full = sv_conv(x, psf_grid, padding="reflect")
    rows, cols = slice(40, 104), slice(24, 88)
    tile = sv_conv(x[..., rows, cols].contiguous(), tile_params(SpaceVaryingBlur("zeros"), {"psf_grid": psf_grid},
                                                                 (128, 128), rows, cols)["psf_grid"],
                   padding="reflect")
    core = (..., slice(6, -6), slice(6, -6))
    error = (tile[core] - full[..., rows, cols][core]).abs().max()
    # The tile re-interpolates the bilinear field between its own 5x5 nodes (twice the full grid's density):
    # 4.5e-3 measured where the blur's values are ~0.5; the same tile given another part of the field (the
    # image's corner) is off by 0.1.
    assert error < 5e-3, error
    shifted = sv_conv(x[..., rows, cols].contiguous(), tile_params(SpaceVaryingBlur("zeros"), {"psf_grid": psf_grid},
                                                                    (128, 128), slice(0, 64), slice(0, 64))["psf_grid"],
                      padding="reflect")
    assert (shifted[core] - full[..., rows, cols][core]).abs().max() > 10 * error


@pytest.mark.parametrize("case", ["cg-space-varying", "wiener-uniform"])
def test_tiled_linear_solver_equals_untiled(case):
    x = _photo(96)
    g = torch.Generator().manual_seed(1)
    if case == "cg-space-varying":
        op, params = SpaceVaryingBlur(padding="reflect"), {
            "psf_grid": _lens((4, 4), 13, g)}
        def solve(y, p):
            return cg_tikhonov(y, op, p, lam=0.05, iters=50, rtol=1e-8)
    else:
        op, params = Blur(padding="reflect"), {"kernel": motion_kernel(1, size=13, generator=g)["kernel"].double()}
        def solve(y, p):
            return wiener(y, op, p, lam=0.01, regulariser="gradient")
    y = op.A(x, **params) + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    whole = solve(y, params)
    tiled = restore_tiled(solve, y, op, params, tile=48, overlap=16)
    difference = (tiled - whole).square().mean().sqrt()
    # Each tile solves with the blur's padding at its borders, where the photo continues; the blend hides most
    # of that. Measured RMS difference: 2e-4 for both (a fiftieth of the noise, 0.01).
    assert difference < 1e-3, difference


def test_tile_smaller_than_the_kernel_is_refused():
    y = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="tile must be an int at least the kernel size 31, got 16"):
        restore_tiled(lambda y, p: y, y, Blur("circular"), {"kernel": torch.ones(1, 1, 31, 31) / 961}, tile=16)
