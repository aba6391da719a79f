r"""DiffPIR (Zhu et al. 2023, "Denoising Diffusion Models for Plug-and-Play Image Restoration", Alg. 1) on a flow
prior.

Each step from flow time :math:`t_i` to :math:`t_{i+1}` (:math:`t = 1` data, see :mod:`blindfast.models.prior`):

.. math:: \hat x_1 = \mathbb E[x_1 | x_{t_i}], \qquad
          \tilde x_1 = \arg\min_x \|y - A x\|^2 + \rho_i \|x - \hat x_1\|^2, \quad
          \rho_i = \lambda \sigma_n^2 / \bar\sigma_i^2,

.. math:: \hat\epsilon = \frac{x_{t_i} - t_i \tilde x_1}{1 - t_i}, \qquad
          x_{t_{i+1}} = t_{i+1} \tilde x_1
                        + (1 - t_{i+1})\big(\sqrt{1 - \zeta}\,\hat\epsilon + \sqrt\zeta\,\epsilon\big)

(Alg. 1: the data step on the denoised estimate, the effective noise re-derived from it, and a mix with
fresh noise :math:`\epsilon` weighted by :math:`\zeta`). The data step works on [0, 1] images, where the prior's
noise std at time t is :math:`\bar\sigma = (1 - t) / (2 t)` (:mod:`blindfast.restore.prior_denoiser`). The times
run uniformly in noise level from :math:`\bar\sigma_{\text{start}}` to 0; starting below pure noise from the
measurement (``t_start`` < 1 noise, as DiffPIR's and DDRM's shortened chains do) keeps CPU runs short.
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

__all__ = ["diffpir", "DIFFPIR_ZETA", "DIFFPIR_LAMBDA", "DIFFPIR_STEPS", "DIFFPIR_SIGMA_START"]

DIFFPIR_ZETA = 0.3      # a middle fresh-noise fraction of DiffPIR's [0, 1] range; not tuned per photo
# rho_i has DPIR's alpha_k form. Chosen with PnP's on the astronaut crop (train split), zeta 0.3: lambda 0.23 /
# 1 / 3 gave 24.95 / 26.04 / 25.03 dB (motion) and - / 30.62 / 30.21 dB (lens); zeta 0 at lambda 3: 23.25 (motion).
DIFFPIR_LAMBDA = 1.0
DIFFPIR_STEPS = 20      # 20 denoiser calls, 2.5x PnP-HQS's 8: a CPU-sized chain
DIFFPIR_SIGMA_START = 49 / 255  # DPIR's first noise level: the chain starts from the measurement, not from noise


def diffpir(y: Tensor, op: LinearOperator, params: dict, prior: Prior | PriorDenoiser, *, sigma: float,
            steps: int = DIFFPIR_STEPS, lam: float = DIFFPIR_LAMBDA, zeta: float = DIFFPIR_ZETA,
            sigma_start: float = DIFFPIR_SIGMA_START, cg_iters: int = DEFAULT_DATA_CG_ITERS,
            generator: torch.Generator | None = None, timings: dict | None = None,
            progress: bool = False) -> Tensor:
    """DiffPIR's sampler (module docstring).

    Args:
        y: (B, C, Ho, Wo) the measurement, images in [0, 1].
        op, params: the linear operator and its parameters.
        prior: a pixel :class:`~blindfast.models.Prior` (on tiles by default) or a :class:`PriorDenoiser`.
        sigma: the measurement's noise std sigma_n > 0 ([0, 1] units).
        steps: denoiser + data steps.
        lam: lambda in rho_i.
        zeta: the fresh-noise fraction in [0, 1].
        sigma_start: the noise level (std, [0, 1] units) the chain starts at, from ``A^T y`` or ``y`` plus noise.
        cg_iters: CG iterations per data step (non-uniform operators).
        generator: draws the start and step noise.
        timings: if a dict, receives "data_s" and "denoise_s".
        progress: a tqdm bar.
    Returns:
        (B, C, H, W) the final data-consistent estimate in [0, 1] units (not clipped).
    """
    check_measurement(y)
    sigma = check_positive("sigma", sigma)
    lam = check_positive("lam", lam)
    sigma_start = check_positive("sigma_start", sigma_start)
    if not 0 <= zeta <= 1:
        raise ValueError(f"zeta must lie in [0, 1], got {zeta!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    check_blur_params(op, params, y)
    denoiser = prior if isinstance(prior, PriorDenoiser) else PriorDenoiser(prior)
    noise_levels = [sigma_start * (1 - i / steps) for i in range(steps + 1)]   # ends at 0: t = 1
    spent = {"data_s": 0.0, "denoise_s": 0.0}

    def noise(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)

    with torch.no_grad():
        start_image = op.A_adjoint(y, **params)
        if start_image.shape == y.shape:
            start_image = y
        # x_t in the [0, 1] units of the data step: u_t = x_t / t mapped back, i.e. image + sigma_t * noise
        u = start_image + noise_levels[0] * noise(start_image)
        estimate = u
        for i in tqdm(range(steps), desc="DiffPIR", unit="step", disable=not progress, leave=False):
            tic = time.perf_counter()
            denoised = denoiser(u, noise_levels[i])
            toc = time.perf_counter()
            estimate = proximal_data_step(y, op, params, denoised, lam * sigma**2 / noise_levels[i]**2,
                                          x0=estimate, cg_iters=cg_iters)
            spent["denoise_s"] += toc - tic
            spent["data_s"] += time.perf_counter() - toc
            if i + 1 < steps:
                # Alg. 1's noise re-mix in image units: x_t / t = x_1 + ((1 - t) / t) eps and
                # ((1 - t) / t) / 2 = sigma_t
                eps_hat = (u - estimate) / noise_levels[i]
                mixed = math.sqrt(1 - zeta) * eps_hat + math.sqrt(zeta) * noise(u)
                u = estimate + noise_levels[i + 1] * mixed
    if timings is not None:
        timings.update(spent)
    return estimate
