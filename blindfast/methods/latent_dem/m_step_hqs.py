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

Either domain can fit the kernel to lightly smoothed images (``smoothing``: a circular Gaussian g of that std on both
the estimate and the measurement, :func:`gaussian_smoothing`; Cho & Lee's coarse scales without the pyramid). A
common filter leaves the true kernel the minimiser, :math:`k \circledast (g \circledast x) = g \circledast (k
\circledast x) = g \circledast y`, while the data term's frequencies are weighted by :math:`|G|^2`: the fine
detail a diffusion prior invents (the estimate's excess edge and texture energy, which makes :math:`K = Y / X` too
weak at high frequencies: a spread kernel) weighs less, and there the kernel follows its prior step (the denoised
previous kernel) instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.ops import hqs_kernel_update
from blindfast.physics import Blur, gaussian_kernel

__all__ = ["M_STEP_DOMAINS", "image_gradients", "gaussian_smoothing", "hqs_m_step"]

M_STEP_DOMAINS = ("intensity", "gradient")  # hqs_m_step's domain: LatentDEM's, Cho & Lee's (module docstring)
SMOOTHING_TRUNCATE = 4.0  # the Gaussian's radius in stds (scipy.ndimage.gaussian_filter's default)
_CIRCULAR_BLUR = Blur(padding="circular")


def image_gradients(images: Tensor) -> Tensor:
    r"""(..., 2 C, H, W) the circular forward differences of (..., C, H, W) ``images``: the C horizontal ones
    :math:`x[i, j + 1 \bmod W] - x[i, j]`, then the C vertical ones :math:`x[i + 1 \bmod H, j] - x[i, j]`."""
    horizontal = torch.roll(images, shifts=-1, dims=-1) - images
    vertical = torch.roll(images, shifts=-1, dims=-2) - images
    return torch.cat((horizontal, vertical), dim=-3)


def gaussian_smoothing(images: Tensor, std: float) -> Tensor:
    """(..., C, H, W) ``images`` circularly convolved with the normalised sampled Gaussian of ``std`` pixels
    (:func:`~blindfast.physics.gaussian_kernel`), radius ``int(SMOOTHING_TRUNCATE * std + 0.5)``
    (scipy.ndimage.gaussian_filter with ``mode="wrap"``); ``std`` 0 returns them unchanged. Circular, so it commutes
    exactly with the circular blur the M-step assumes.

    Raises:
        ValueError: a negative std, or a Gaussian wider than the images.
    """
    if std < 0:
        raise ValueError(f"the smoothing std must be >= 0 pixels, got {std}")
    if std == 0:
        return images
    radius = int(SMOOTHING_TRUNCATE * std + 0.5)
    if 2 * radius + 1 > min(images.shape[-2:]):
        raise ValueError(f"the smoothing Gaussian (std {std}, {2 * radius + 1} taps) must fit the images "
                         f"{tuple(images.shape[-2:])}")
    gaussian = gaussian_kernel(2 * radius + 1, std, dtype=images.dtype, device=images.device)
    return _CIRCULAR_BLUR.A(images.reshape(-1, *images.shape[-3:]), kernel=gaussian).reshape(images.shape)


def hqs_m_step(image: Tensor, y: Tensor, kernel: Tensor, *, sigma: float, delta: float, iters: int, lam: float,
               denoiser=None, domain: str = "intensity", smoothing: float = 0.0) -> Tensor:
    """One M-step: :func:`~blindfast.ops.hqs_kernel_update` of ``kernel`` on ``image`` and ``y`` (``domain``
    "intensity") or on their :func:`image_gradients` ("gradient"; the module docstring), warm-started from
    ``kernel``, with ``sigma``, ``delta``, ``iters``, ``lam`` and ``denoiser`` as the op takes them.

    Args:
        image: (1, C, H, W) the image estimate D(z0_hat).
        y: (C, H, W) the measurement.
        kernel: (kh, kw) the current kernel.
        domain: one of :data:`M_STEP_DOMAINS`.
        smoothing: the std (pixels, >= 0) of the Gaussian both images are smoothed by first
            (:func:`gaussian_smoothing`, module docstring); 0: none.
    Returns:
        (kh, kw) the updated kernel: non-negative, sum 1.
    """
    if domain not in M_STEP_DOMAINS:
        raise ValueError(f"domain must be one of {M_STEP_DOMAINS}, got {domain!r}")
    if domain == "gradient":
        image, y = image_gradients(image), image_gradients(y)
    image, y = gaussian_smoothing(image, smoothing), gaussian_smoothing(y, smoothing)
    return hqs_kernel_update(image, y, kernel, sigma=sigma, delta=delta, iters=iters, denoiser=denoiser, lam=lam)
