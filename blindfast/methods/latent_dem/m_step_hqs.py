r"""The kernel M-step of :func:`~blindfast.methods.latent_dem.em_deblur`: :func:`blindfast.ops.hqs_kernel_update`
on intensities (LatentDEM's, Bai et al. 2024, Eq. 12) or on image gradients.

The gradient domain (Cho & Lee 2009, "Fast motion deblurring", Eq. 6; Levin et al. 2011) fits the kernel to the
finite differences of the image instead of the image itself:

.. math:: k = \arg\min_k \sum_{d \in \{h, v\}} \|k \circledast \partial_d \hat x - \partial_d y\|^2
          + \alpha \|k - \phi\|^2,
          \qquad K = \frac{\sum_{d,c} \overline{\Xi_{dc}} \Upsilon_{dc} + \alpha \Phi}{\sum_{d,c} |\Xi_{dc}|^2 + \alpha}

with :math:`\Xi_{dc} = F \partial_d \hat x_c = D_d X_c`, :math:`\Upsilon_{dc} = F \partial_d y_c = D_d Y_c`, i.e. the
intensity update with :math:`|X_c|^2` weighted by :math:`|D_d|^2` (0 at the zero frequency, small at the low ones):
the low frequencies, where a diffusion estimate's errors (smooth shading, colour shifts) dominate and where a kernel
carries little beyond its sum, weigh less, so the kernel follows the edges. The differences are circular
(:func:`image_gradients`), so :math:`\partial_d (k \circledast x) = k \circledast \partial_d x` holds exactly for the
circular blur the update assumes, and the two directions are passed to :func:`~blindfast.ops.hqs_kernel_update` as
channels (it sums its data term over channels): no new op. Everything else, :math:`\alpha = \delta \sigma^2`, the
plug-and-play kernel denoiser, the clip, normalisation and re-centring, is the intensity M-step's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.ops import hqs_kernel_update

__all__ = ["M_STEP_DOMAINS", "image_gradients", "hqs_m_step"]

M_STEP_DOMAINS = ("intensity", "gradient")  # hqs_m_step's domain: LatentDEM's, Cho & Lee's (module docstring)


def image_gradients(images: Tensor) -> Tensor:
    r"""(..., 2 C, H, W) the circular forward differences of (..., C, H, W) ``images``: the C horizontal ones
    :math:`x[i, j + 1 \bmod W] - x[i, j]`, then the C vertical ones :math:`x[i + 1 \bmod H, j] - x[i, j]`."""
    horizontal = torch.roll(images, shifts=-1, dims=-1) - images
    vertical = torch.roll(images, shifts=-1, dims=-2) - images
    return torch.cat((horizontal, vertical), dim=-3)


def hqs_m_step(image: Tensor, y: Tensor, kernel: Tensor, *, sigma: float, delta: float, iters: int, lam: float,
               denoiser=None, domain: str = "intensity") -> Tensor:
    """One M-step: :func:`~blindfast.ops.hqs_kernel_update` of ``kernel`` on ``image`` and ``y`` (``domain``
    "intensity") or on their :func:`image_gradients` ("gradient"; the module docstring), warm-started from
    ``kernel``, with ``sigma``, ``delta``, ``iters``, ``lam`` and ``denoiser`` as the op takes them.

    Args:
        image: (1, C, H, W) the image estimate D(z0_hat).
        y: (C, H, W) the measurement.
        kernel: (kh, kw) the current kernel.
        domain: one of :data:`M_STEP_DOMAINS`.
    Returns:
        (kh, kw) the updated kernel: non-negative, sum 1.
    """
    if domain not in M_STEP_DOMAINS:
        raise ValueError(f"domain must be one of {M_STEP_DOMAINS}, got {domain!r}")
    if domain == "gradient":
        image, y = image_gradients(image), image_gradients(y)
    return hqs_kernel_update(image, y, kernel, sigma=sigma, delta=delta, iters=iters, denoiser=denoiser, lam=lam)
