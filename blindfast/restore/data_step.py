r"""The data step shared by the plug-and-play solvers: a proximal step on the data term,

.. math:: \operatorname{prox}(z) = \arg\min_x \|A x - y\|^2 + \rho \|x - z\|^2,

in closed form by FFT for a uniform :class:`~blindfast.physics.Blur` (:func:`blindfast.restore.wiener`, reflective
boundary for non-circular paddings) and by warm-started conjugate gradient for any other linear operator
(:class:`~blindfast.physics.SpaceVaryingBlur`).

:func:`relative_noise_gain` says where the step leaves more of the measurement's noise: a plug-and-play loop can
denoise each part of the image at the level it carries (``pnp_hqs(local_sigma=True)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast.physics import Blur, LinearOperator, SpaceVaryingBlur
from blindfast.restore.cg import cg_tikhonov
from blindfast.restore.wiener import wiener

__all__ = ["proximal_data_step", "relative_noise_gain", "DEFAULT_DATA_CG_ITERS", "NOISE_GAIN_FFT_SIZE"]

# CG iterations per data step. Warm-started from the previous iterate, whose error the denoiser has just made
# small, a few iterations suffice; more would undo the regularising effect of stopping early at small rho.
DEFAULT_DATA_CG_ITERS = 10
# The frequency grid of relative_noise_gain's sum: 128^2 samples of a kernel's transfer function (the demo lens's
# 8x8 grid of 31x31 PSFs: its relative gains change by < 1e-6 with 64^2 or 256^2 samples).
NOISE_GAIN_FFT_SIZE = 128


def proximal_data_step(y: Tensor, op: LinearOperator, params: dict, z: Tensor, rho: float, *,
                       x0: Tensor | None = None, cg_iters: int = DEFAULT_DATA_CG_ITERS) -> Tensor:
    """The minimiser above (FFT) or its CG approximation.

    Args:
        y: (B, C, Ho, Wo) measurement; op, params: the operator and its parameters.
        z: (B, C, H, W) the point the step is pulled towards; rho: the pull's weight > 0.
        x0: CG's start (default ``z``); cg_iters: CG iterations (not used by the FFT path).
    Returns:
        (B, C, H, W)
    """
    if isinstance(op, Blur) and op.padding != "valid":
        return wiener(y, op, params, lam=rho, regulariser="identity", z=z)
    return cg_tikhonov(y, op, params, lam=rho, regulariser="identity", z=z, x0=x0, iters=cg_iters, rtol=1e-6)


def relative_noise_gain(op: LinearOperator, params: dict, rho: float, shape: tuple[int, int]) -> Tensor | None:
    r"""The std of the measurement's white noise that :func:`proximal_data_step` leaves at each pixel, relative to
    the largest over the image, for a :class:`~blindfast.physics.SpaceVaryingBlur` (None for any other operator:
    a uniform blur leaves the same noise everywhere).

    Near a grid node the blur is locally that node's PSF k, and the step's output carries the noise n (std s) as
    :math:`\hat k^* \hat n / (|\hat k|^2 + \rho)`; by Parseval its std is :math:`s\,g` with

    .. math:: g^2 = \operatorname{mean}_f \frac{|\hat k(f)|^2}{(|\hat k(f)|^2 + \rho)^2}

    (mean over a ``NOISE_GAIN_FFT_SIZE``^2 frequency grid and the channels). A sharp PSF (a lens's centre) keeps
    most of the noise, :math:`g \approx 1 / (1 + \rho)`; a wide one (its rim) filters the high frequencies, and
    their noise with them. The nodes' :math:`g / \max g` are interpolated bilinearly to the pixels, the nodes on
    the corner pixels as in ``sv_conv``.

    Args:
        op, params: the operator and its parameters (``psf_grid`` (B|1, C|1, Gy, Gx, kh, kw)).
        rho: the data step's weight > 0.
        shape: (H, W) of the image.
    Returns:
        (B|1, 1, H, W) in (0, 1], or None when ``op`` is not a :class:`~blindfast.physics.SpaceVaryingBlur`.
    """
    if not isinstance(op, SpaceVaryingBlur):
        return None
    grid = params["psf_grid"]
    transfer = torch.fft.rfft2(grid.double(), s=(NOISE_GAIN_FFT_SIZE,) * 2).abs().square()
    # rfft2 keeps half the frequencies: weight the columns that stand for two (all but the first and, for an even
    # size, the last) twice, so the mean is over the full grid
    weights = torch.full((transfer.shape[-1],), 2.0, dtype=torch.float64, device=grid.device)
    weights[0] = weights[-1] = 1.0
    gain_sq = (transfer / (transfer + rho).square() * weights).sum(dim=(-2, -1)) / NOISE_GAIN_FFT_SIZE**2
    gain = gain_sq.mean(1).sqrt()                                     # (B, Gy, Gx): channels pooled
    relative = gain / gain.amax(dim=(-2, -1), keepdim=True)
    pixels = F.interpolate(relative[:, None], size=tuple(shape), mode="bilinear", align_corners=True)
    return pixels.to(grid.dtype)
