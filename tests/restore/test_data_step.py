"""relative_noise_gain against numpy's full FFT and a Monte Carlo run of the data step itself."""

import numpy as np
import torch

from blindfast.physics import Blur, SpaceVaryingBlur, gaussian_kernel, lens_psf_grid
from blindfast.restore.data_step import NOISE_GAIN_FFT_SIZE, proximal_data_step, relative_noise_gain


def _numpy_gain(kernels: np.ndarray, rho: float) -> float:
    """sqrt(mean over channels and the full N x N frequency grid of |K|^2 / (|K|^2 + rho)^2), (C, kh, kw)."""
    transfer = np.abs(np.fft.fft2(kernels, s=(NOISE_GAIN_FFT_SIZE,) * 2)) ** 2
    return float(np.sqrt(np.mean(transfer / (transfer + rho) ** 2)))


def test_relative_noise_gain_on_the_nodes_and_between_them():
    """A 2x3 grid of Gaussians of different widths, per channel: at the corner-pixel nodes, g / max g from
    numpy's full FFT; between two nodes, the bilinear mean."""
    widths = np.array([[0.6, 1.0, 1.6], [2.4, 0.8, 3.0]])
    grid = torch.stack([torch.stack([torch.stack([gaussian_kernel(15, w * f) for f in (1.0, 1.2, 0.9)])
                                     for w in row]) for row in widths])               # (Gy, Gx, C, kh, kw)
    grid = grid.permute(2, 0, 1, 3, 4)[None].double()                                  # (1, C, Gy, Gx, kh, kw)
    rho = 0.05
    H, W = 21, 31
    got = relative_noise_gain(SpaceVaryingBlur(padding="reflect"), {"psf_grid": grid}, rho, (H, W))
    assert got.shape == (1, 1, H, W)
    gains = np.array([[_numpy_gain(grid[0, :, i, j].numpy(), rho) for j in range(3)] for i in range(2)])
    nodes = gains / gains.max()
    np.testing.assert_allclose(got[0, 0, ::H - 1, ::(W - 1) // 2].numpy(), nodes, rtol=1e-12, atol=0)
    np.testing.assert_allclose(got[0, 0, H // 2, 0].item(), nodes[:, 0].mean(), rtol=1e-12)


def test_relative_noise_gain_is_none_for_a_uniform_blur():
    assert relative_noise_gain(Blur(padding="reflect"), {"kernel": gaussian_kernel(5, 1.0)[None, None]}, 0.1,
                               (8, 8)) is None


def test_relative_noise_gain_matches_the_noise_the_data_step_leaves():
    """The data step's response to white noise alone (z = 0), on a lens whose PSF widens to the rim: its RMS on
    a block at the centre and on the four corners' blocks has the ratio the map predicts, to 10%. The map is a
    local approximation (each node's PSF as if it blurred the whole image, gains interpolated between nodes): here
    it predicts 0.41 where three draws of three images measure 0.383-0.385 (one image's ratio varies by about 5%,
    the noise being coloured)."""
    op = SpaceVaryingBlur(padding="circular")
    params = {"psf_grid": lens_psf_grid((3, 3), 31, channels=3, generator=torch.Generator().manual_seed(0))}
    rho, size, block = 0.1, 256, 32
    noise = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    out = proximal_data_step(noise, op, params, torch.zeros_like(noise), rho, x0=torch.zeros_like(noise),
                             cg_iters=40)
    gain = relative_noise_gain(op, params, rho, (size, size))[0, 0]
    centre = slice(size // 2 - block // 2, size // 2 + block // 2)
    ends = (slice(0, block), slice(size - block, size))

    def ratio(a):   # RMS on the corners over RMS at the centre
        corners = torch.cat([a[..., rows, cols].flatten() for rows in ends for cols in ends])
        return (corners.square().mean() / a[..., centre, centre].square().mean()).sqrt().item()

    measured, predicted = ratio(out), ratio(gain)
    assert predicted < 0.8   # the rim does keep less noise here
    assert abs(measured / predicted - 1) < 0.1
