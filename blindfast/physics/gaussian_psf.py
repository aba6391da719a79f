r"""One anisotropic Gaussian PSF, learnt through the Cholesky factor of its covariance: the cheap, physical first
stage of a blind fit of a uniform blur.

A motion blur is, to first order, a blob stretched along the motion: its covariance (the kernel's second moments)
holds the length and the direction, three numbers against the k^2 taps of a free kernel. Parameterising the
covariance as :math:`\Sigma = L L^\top` with a lower-triangular :math:`L` whose diagonal is ``exp`` of a parameter
keeps it positive definite for any parameter values, and unlike (width, anisotropy, angle) it has no saddle at the
isotropic start: there the angle's gradient is zero for every loss, while :math:`L`'s off-diagonal entry gets the
gradient of whatever elongation the loss prefers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from blindfast import _validate

__all__ = ["GaussianPSF", "covariance_gaussian"]


def _odd_size(size: int) -> int:
    """``size`` checked to be a positive odd int (the kernel's centre on a pixel)."""
    size = _validate.positive_int("size", size)
    if size % 2 == 0:
        raise ValueError(f"size must be odd (the kernel's centre on a pixel), got {size}")
    return size


def covariance_gaussian(size: int, cholesky: Tensor) -> Tensor:
    r"""A Gaussian kernel of covariance :math:`\Sigma = L L^\top`, sampled at the pixel centres and normalised:

    .. math:: k(d) \propto \exp\!\big(-\tfrac12\, d^\top \Sigma^{-1} d\big) = \exp\!\big(-\tfrac12 \|L^{-1} d\|^2\big)

    with ``d = (row, column)`` the offset from the window's centre ``size // 2`` (the origin of
    :class:`blindfast.physics.Blur`'s and ``sv_conv``'s kernels), in pixels.

    Args:
        size: k, the window side, odd.
        cholesky: (2, 2) L, lower triangular with a positive diagonal, (row, column) axes; differentiable.
    Returns:
        (k, k) non-negative, summing to 1, in ``cholesky``'s dtype and device.
    Raises:
        ValueError: an even or non-positive size, L not (2, 2), a diagonal entry not > 0.
    """
    size = _odd_size(size)
    if tuple(cholesky.shape) != (2, 2):
        raise ValueError(f"cholesky must have shape (2, 2), got {tuple(cholesky.shape)}")
    if not (cholesky.diagonal() > 0).all():
        raise ValueError(f"cholesky's diagonal must be > 0, got {cholesky.diagonal().tolist()}")
    d = torch.arange(size, dtype=cholesky.dtype, device=cholesky.device) - size // 2
    rows, cols = d[:, None], d[None, :]
    # z = L^{-1} d by forward substitution
    z_row = rows / cholesky[0, 0]
    z_col = (cols - cholesky[1, 0] * z_row) / cholesky[1, 1]
    kernel = torch.exp(-0.5 * (z_row**2 + z_col**2))
    return kernel / kernel.sum()


class GaussianPSF(nn.Module):
    r"""One anisotropic Gaussian kernel (:func:`covariance_gaussian`) for every channel and every node of a grid.

    Parameters: ``log_diagonal`` (2,), the logs of :math:`L`'s diagonal (pixels), and ``off_diagonal`` (1,),
    :math:`L_{10}` (pixels). It starts isotropic, :math:`L = \sigma_0 I`.

    Args:
        grid: (Gy, Gx) nodes of the grid it is rendered on (all alike).
        size: k, the window side, odd.
        init_sigma: sigma_0, the initial standard deviation, pixels, > 0.
    """

    def __init__(self, grid: tuple[int, int], size: int, init_sigma: float = 1.0):
        super().__init__()
        self.grid = _validate.int_pair("grid", grid, "(Gy, Gx)")
        self.size = _odd_size(size)
        init_sigma = _validate.real("init_sigma", init_sigma, 0, low_open=True)
        self.log_diagonal = nn.Parameter(torch.full((2,), math.log(init_sigma)))
        self.off_diagonal = nn.Parameter(torch.zeros(1))

    def cholesky(self) -> Tensor:
        """(2, 2) L, (row, column) axes."""
        diagonal = self.log_diagonal.exp()
        zero = self.off_diagonal.new_zeros(1)
        return torch.stack([torch.cat([diagonal[:1], zero]), torch.cat([self.off_diagonal, diagonal[1:]])])

    def covariance(self) -> Tensor:
        """(2, 2) Sigma = L L^T, pixels^2, (row, column) axes."""
        L = self.cholesky()
        return L @ L.T

    def forward(self) -> Tensor:
        """The PSF grid.

        Returns:
            (1, 1, Gy, Gx, k, k): the same kernel at every node, shared by every channel (``sv_conv`` broadcasts
            the channel axis).
        """
        kernel = covariance_gaussian(self.size, self.cholesky())
        return kernel.expand(1, 1, *self.grid, self.size, self.size)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, size={self.size}"
