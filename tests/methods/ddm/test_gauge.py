"""DDM's gauge: each node's common centroid moved to the window's centre, the channels' relative offsets kept."""

import torch

from blindfast.methods.ddm.gauge import centre_nodes, node_centroids


def _gaussians(offsets: torch.Tensor, k: int = 31, width: float = 2.0) -> torch.Tensor:
    """(C, Gy, Gx, 2) centre offsets (dy, dx) -> (1, C, Gy, Gx, k, k) isotropic Gaussians there, float64. At width
    2 px a sampled Gaussian is band-limited to 3e-9 at the Nyquist frequency, so Fourier shifts of it are exact, and
    a 31-px window truncates its tails past 6 widths."""
    d = torch.arange(k, dtype=torch.float64) - k // 2
    dy = d[:, None] - offsets[..., 0, None, None]
    dx = d[None, :] - offsets[..., 1, None, None]
    g = torch.exp(-(dy.square() + dx.square()) / (2 * width**2))
    return (g / g.sum((-2, -1), keepdim=True))[None]


def test_the_common_shift_goes_and_the_relative_one_stays():
    gen = torch.Generator().manual_seed(0)
    common = (torch.rand(1, 2, 3, 2, generator=gen, dtype=torch.float64) - 0.5) * 3   # up to 1.5 px
    relative = torch.tensor([-0.4, 0.0, 0.4], dtype=torch.float64)[:, None, None, None] * torch.tensor([1.0, 0.5])
    grid = _gaussians(common + relative)                                           # (1, 3, 2, 3, 31, 31)
    torch.testing.assert_close(node_centroids(grid)[0], common[0], atol=1e-6, rtol=0)
    centred = centre_nodes(grid)
    assert centred.shape == grid.shape and centred.dtype == grid.dtype and (centred >= 0).all()
    torch.testing.assert_close(centred.sum((-2, -1)), torch.ones(1, 3, 2, 3, dtype=torch.float64))
    torch.testing.assert_close(node_centroids(centred), torch.zeros(1, 2, 3, 2, dtype=torch.float64), atol=1e-6,
                               rtol=0)
    # the same Gaussians with only their relative offsets: a band-limited shift is exact
    torch.testing.assert_close(centred, _gaussians(relative.expand(3, 2, 3, 2)), atol=1e-7, rtol=0)


def test_a_centred_grid_is_left_as_it_is():
    grid = _gaussians(torch.zeros(3, 4, 4, 2, dtype=torch.float64)).float()
    torch.testing.assert_close(centre_nodes(grid), grid, atol=1e-7, rtol=0)
