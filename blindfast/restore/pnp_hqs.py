r"""Plug-and-play half-quadratic splitting with a prior's Tweedie denoiser (DPIR, Zhang et al. 2021, "Plug-and-Play
Image Restoration with Deep Denoiser Prior", TPAMI).

For :math:`\min_x \tfrac{1}{2\sigma^2}\|y - A x\|^2 + \lambda \Phi(x)`, HQS alternates (their Eq. 6a, 6b)

.. math:: x_k = \arg\min_x \|y - A x\|^2 + \alpha_k \|x - z_{k-1}\|^2, \qquad
          z_k = \mathrm{Denoiser}(x_k, \sigma_k),

with :math:`\alpha_k = \lambda \sigma^2 / \sigma_k^2` and :math:`\sigma_k` falling log-uniformly from
:math:`\sigma_1 = 49/255` to :math:`\sigma_K = \sigma` (their deblurring settings K = 8, lambda = 0.23; ours below). The data
step is :func:`blindfast.restore.data_step.proximal_data_step` (FFT for a uniform blur, CG otherwise); the denoiser
is :class:`blindfast.restore.prior_denoiser.PriorDenoiser`, the prior's :math:`E[x_1 | x_t]` at the time whose
noise is :math:`\sigma_k`.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor
from tqdm import tqdm

from blindfast.models import Prior
from blindfast.physics import LinearOperator
from blindfast.restore.data_step import DEFAULT_DATA_CG_ITERS, proximal_data_step
from blindfast.restore.prior_denoiser import PriorDenoiser
from blindfast.restore.validation import check_blur_params, check_measurement, check_positive

__all__ = ["pnp_hqs", "noise_schedule", "DPIR_SIGMA_START", "DPIR_LAMBDA", "DPIR_ITERS", "PNP_LAMBDA",
           "PNP_ITERS"]

DPIR_SIGMA_START = 49 / 255   # Zhang et al. 2021: the first denoiser's noise level
DPIR_LAMBDA = 0.23            # their lambda for deblurring, with their DRUNet
DPIR_ITERS = 8                # their K for deblurring
# Our defaults with the shipped pixel_tiny, chosen on a 128^2 crop of astronaut (the *train* split; the test photos
# never chose anything), noise 0.01, CG-Tikhonov at 26.15 dB (motion 31x31) / 29.78 dB (8x8 lens, 31x31):
#   (K, lambda)   (8, 0.23)  (8, 1)         (8, 3)         (16, 1)        (16, 3)
#   motion        27.05      27.22          26.03          27.83          26.66
#   lens          -          31.77          30.84          31.56          30.41
# (16, 1) has the best mean gain over CG (+1.74 dB); a weaker denoiser than DRUNet wants more weight on the prior.
PNP_LAMBDA = 1.0
PNP_ITERS = 16


def noise_schedule(sigma: float, iters: int, sigma_start: float = DPIR_SIGMA_START) -> list[float]:
    """``iters`` noise levels falling log-uniformly from ``max(sigma_start, sigma)`` to ``sigma``."""
    start = max(sigma_start, sigma)
    if iters == 1:
        return [sigma]
    return [math.exp(math.log(start) + (math.log(sigma) - math.log(start)) * k / (iters - 1)) for k in range(iters)]


def pnp_hqs(y: Tensor, op: LinearOperator, params: dict, prior: Prior | PriorDenoiser, *, sigma: float,
            iters: int = PNP_ITERS, lam: float = PNP_LAMBDA, sigma_start: float = DPIR_SIGMA_START,
            cg_iters: int = DEFAULT_DATA_CG_ITERS, timings: dict | None = None, progress: bool = False) -> Tensor:
    """DPIR's iterations (module docstring).

    Args:
        y: (B, C, Ho, Wo) the measurement, images in [0, 1].
        op, params: the linear operator and its parameters.
        prior: a pixel :class:`~blindfast.models.Prior` (denoised on tiles by default) or a :class:`PriorDenoiser`.
        sigma: the measurement's noise std (> 0), in [0, 1] units.
        iters: K, the number of data + denoiser steps.
        lam: lambda, the weight of the prior.
        sigma_start: the first denoiser's noise level.
        cg_iters: CG iterations per data step (non-uniform operators).
        timings: if a dict, receives "data_s" and "denoise_s", the seconds spent in each step.
        progress: a tqdm bar.
    Returns:
        (B, C, H, W) the last denoised iterate z_K.
    Raises:
        ValueError: sigma, lam or sigma_start <= 0, iters < 1, bad measurement or blur parameters.
    """
    check_measurement(y)
    sigma = check_positive("sigma", sigma)
    lam = check_positive("lam", lam)
    sigma_start = check_positive("sigma_start", sigma_start)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    check_blur_params(op, params, y)
    denoiser = prior if isinstance(prior, PriorDenoiser) else PriorDenoiser(prior)
    spent = {"data_s": 0.0, "denoise_s": 0.0}
    with torch.no_grad():
        z = op.A_adjoint(y, **params)
        if z.shape == y.shape:
            z = y.clone()    # the blurred photo is a better start than A^T y, which is blurred twice
        x = z
        for sigma_k in tqdm(noise_schedule(sigma, iters, sigma_start), desc="PnP-HQS", unit="it",
                            disable=not progress, leave=False):
            start = time.perf_counter()
            x = proximal_data_step(y, op, params, z, lam * sigma**2 / sigma_k**2, x0=x, cg_iters=cg_iters)
            middle = time.perf_counter()
            z = denoiser(x, sigma_k)
            spent["data_s"] += middle - start
            spent["denoise_s"] += time.perf_counter() - middle
    if timings is not None:
        timings.update(spent)
    return z
