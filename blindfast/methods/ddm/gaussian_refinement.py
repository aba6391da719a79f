r"""Free kernels that refine a Gaussian stage's estimate without growing a pedestal: DDM's uniform blur, step 2.

Measured on a camera-shake kernel (README, "A uniform motion kernel"): one anisotropic Gaussian places the blur's
length and direction (NCC 0.90-0.92 to the truth), and a free kernel refining from it drifts away (0.909 to 0.76 in
900 steps) by growing a pedestal, 11-13% of its mass in taps below 5% of its peak, spread over the window and
heaviest in the corners: what the distribution matching makes of the content difference between the unpaired
sets. Both parameterisations here keep the refinement where the Gaussian put the blur:

- :class:`SupportKernel` ("support" stage): a free kernel on the support :func:`ellipse_support` of the Gaussian
  stage's estimate (its 3-sigma ellipse, dilated by a pixel); the taps outside are held at exactly 0.
- :class:`ModulatedKernel` ("modulated" stage): the Gaussian stage's kernel times a free positive factor,
  :math:`k \propto G\, e^{c}`; a tap moves in proportion to its own mass, so where the Gaussian has none no
  gradient reaches it.

Each takes the previous stage's (1, Gy, Gx, k, k) estimate (one kernel per node for every channel, as the "kernel"
stage of :mod:`blindfast.methods.ddm.matching`) and returns (1, 1, Gy, Gx, k, k) kernels, non-negative, summing to
1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindfast.physics.parameterisations import normalise_kernels

__all__ = ["kernel_moments", "ellipse_support", "SupportKernel", "ModulatedKernel", "SUPPORT_SIGMAS"]

SUPPORT_SIGMAS = 3.0   # a Gaussian holds 98.9% of its mass inside its 3-sigma ellipse (1 - e^{-9/2})


def kernel_moments(kernels: Tensor) -> tuple[Tensor, Tensor]:
    r"""Each kernel's centroid and covariance (its second central moments), offsets d in pixels:

    .. math:: \mu = \frac{\sum_d k(d)\, d}{\sum_d k(d)}, \qquad
              \Sigma = \frac{\sum_d k(d)\, (d - \mu)(d - \mu)^\top}{\sum_d k(d)}

    Args:
        kernels: (..., kh, kw) non-negative, each with a positive sum.
    Returns:
        (..., 2) the centroid (row, column) from index (0, 0), and (..., 2, 2) the covariance, pixels^2.
    """
    kh, kw = kernels.shape[-2:]
    rows = torch.arange(kh, dtype=kernels.dtype, device=kernels.device)
    cols = torch.arange(kw, dtype=kernels.dtype, device=kernels.device)
    offsets = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)            # (kh, kw, 2)
    weights = kernels / kernels.sum((-2, -1), keepdim=True)
    centroid = torch.einsum("...ij,ijc->...c", weights, offsets)
    centred = offsets - centroid[..., None, None, :]                                     # (..., kh, kw, 2)
    covariance = torch.einsum("...ij,...ija,...ijb->...ab", weights, centred, centred)
    return centroid, covariance


def ellipse_support(kernels: Tensor, sigmas: float = SUPPORT_SIGMAS, dilation: int = 1) -> Tensor:
    r"""The taps inside each kernel's ``sigmas``-sigma ellipse (:func:`kernel_moments`), dilated by ``dilation``
    pixels (a (2 dilation + 1)^2 square):

    .. math:: S = \mathrm{dilate}\Big(\big\{d : (d - \mu)^\top \Sigma^{-1} (d - \mu) \le s^2\big\}\Big)

    The ellipse of the Gaussian stage's estimate bounds where its blur lies (a straight motion of length L has
    :math:`\sigma = L / \sqrt{12}` along it, so its ends, :math:`L / 2 \approx 1.7 \sigma` from the centre, lie well
    inside 3 sigma); the pixel of dilation leaves room for a path that bends off the fitted ellipse.

    Args:
        kernels: (..., kh, kw) non-negative, each with a positive sum and a non-singular covariance.
        sigmas: s, the ellipse's size in standard deviations, > 0.
        dilation: pixels of dilation, >= 0.
    Returns:
        (..., kh, kw) in ``kernels``' dtype: 1 on the support, 0 off it.
    """
    kh, kw = kernels.shape[-2:]
    centroid, covariance = kernel_moments(kernels.double())
    rows = torch.arange(kh, dtype=torch.float64, device=kernels.device)
    cols = torch.arange(kw, dtype=torch.float64, device=kernels.device)
    offsets = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)            # (kh, kw, 2)
    centred = offsets - centroid[..., None, None, :]                                     # (..., kh, kw, 2)
    precision = torch.linalg.inv(covariance)                                              # (..., 2, 2)
    distance = torch.einsum("...ija,...ab,...ijb->...ij", centred, precision, centred)
    inside = (distance <= sigmas**2).double().reshape(-1, 1, kh, kw)
    side = 2 * dilation + 1
    dilated = F.max_pool2d(inside, side, stride=1, padding=dilation) if dilation else inside
    return dilated.reshape(kernels.shape).to(kernels.dtype)


class SupportKernel(nn.Module):
    r"""A free kernel per node on a fixed support: :math:`k = |w \odot S| / \sum |w \odot S|`
    (:func:`blindfast.physics.parameterisations.normalise_kernels` of the masked weights).

    The support S is :func:`ellipse_support` of the initial kernels (the Gaussian stage's estimate); the taps off
    it are 0 and receive no gradient, so no pedestal can grow there. The raw weights start at the initial kernels
    (masked and renormalised).

    Args:
        init: (1, Gy, Gx, k, k) the previous stage's kernels, non-negative, each with a positive sum.
        sigmas, dilation: the support's, see :func:`ellipse_support`.
    """

    def __init__(self, init: Tensor, sigmas: float = SUPPORT_SIGMAS, dilation: int = 1):
        super().__init__()
        support = ellipse_support(init, sigmas, dilation)
        self.register_buffer("support", support)
        self.raw = nn.Parameter(normalise_kernels(init.detach() * support).clone())

    def forward(self) -> Tensor:
        """(1, 1, Gy, Gx, k, k) the kernels, non-negative, each summing to 1, zero off the support."""
        return normalise_kernels(self.raw * self.support).unsqueeze(0)


class ModulatedKernel(nn.Module):
    r"""The previous stage's kernels G times a free positive factor per tap:

    .. math:: k(d) = \frac{G(d)\, e^{c(d)}}{\sum_{d'} G(d')\, e^{c(d')}}

    i.e. a softmax of :math:`\log G + c`, with c starting at 0 (k = G). Its derivative
    :math:`\partial k(d) / \partial c(d') = k(d)\, (\delta_{dd'} - k(d'))` vanishes with k(d), so taps that the
    Gaussian leaves empty stay nearly empty (a factor :math:`e^{c}` grows by at most about :math:`e^{\text{lr}}` per
    Adam step), while the mass inside the blur can move to follow the path's shape.

    Args:
        init: (1, Gy, Gx, k, k) G, non-negative, each kernel with a positive sum.
    """

    def __init__(self, init: Tensor):
        super().__init__()
        self.register_buffer("base", (init / init.sum((-2, -1), keepdim=True)).detach().clone())
        self.log_factor = nn.Parameter(torch.zeros_like(self.base))

    def forward(self) -> Tensor:
        """(1, 1, Gy, Gx, k, k) the kernels, non-negative, each summing to 1."""
        # e^{c - max c} keeps the exponent <= 0; the constant cancels in the normalisation
        shifted = self.log_factor - self.log_factor.amax((-2, -1), keepdim=True).detach()
        weighted = self.base * shifted.exp()
        return (weighted / weighted.sum((-2, -1), keepdim=True)).unsqueeze(0)
