r"""LatentDEM's EM loop (Bai et al. 2024, "Blind Inversion using Latent Diffusion Priors", Alg. 1; issue 16): blind
deblurring of a uniform circular blur :math:`y = k \circledast x + n`, :math:`n \sim \mathcal N(0, \sigma^2 I)`,
with a latent diffusion prior (the state z is the prior's latent, D its decoder, the E-step may add the gluing term) or
a pixel one (the FastEM-like setting: z is the image in [-1, 1], D(z) = (z + 1) / 2, no gluing).

::

    z_T ~ N(0, I), k = delta
    for t = T, ..., 1:
        if full EM step (skip-gradient schedule):
            E-step: z_{t-1} = DDIM(z_t) - (zeta' / zeta_t) grad_{z_t} ||y - k * D(z0_hat)||   (e_step.guided_ddim_step)
                              [- gamma grad_{z_t} ||z0_hat - E(k^T y + (I - k^T k *) D(z0_hat))||   latent: gluing]
            M-step, if t <= m_step_start (all t for a pixel prior, t <= 0.3 T for a latent one):
                    k = hqs_kernel_update(D(z0_hat), y, k, sigma, delta, 20 iterations, kernel denoiser, lambda)
                    [with m_step_domain="gradient": on the images' finite differences (m_step_hqs)]
                    [with taper=True: w D(z0_hat) and w y, w the edge taper (edge_taper)]
        else:
            z_{t-1} = DDIM(z_t)                                                        (e_step.prior_ddim_step)
    return D(z_0), k

The loop itself (:func:`diffusion_em`) takes any size-keeping forward operator :math:`A_\phi` in place of the kernel
convolution and any M-step: :func:`em_deblur` is it with the blur and the HQS kernel update, :func:`em_parametric`
with a non-linear parametric operator (rotation, zoom blur) and the gradient M-step
(:mod:`blindfast.methods.latent_dem.m_step_gradient`). A prior with ``encode`` and ``decode`` (a
:class:`~blindfast.models.LatentFlowPrior`) makes it the latent variant: the M-step sees the decoded D(z0_hat).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from blindfast import _validate
from blindfast.methods.latent_dem.e_step import Autoencoder, guided_ddim_step, prior_ddim_step, to_image
from blindfast.methods.latent_dem.m_step_gradient import GRADIENT_ITERS, check_learnable, gradient_m_step
from blindfast.methods.latent_dem.m_step_hqs import M_STEP_DOMAINS, hqs_m_step
from blindfast.methods.latent_dem.schedules import SKIP_EVERY, annealed_zeta, is_full_em_step
from blindfast.models import Prior
from blindfast.models.prior import alpha_bar_of_time
from blindfast.physics import Blur, Operator
from blindfast.restore.validation import check_measurement, check_positive
from blindfast.sampling import ddpm_time_grid

__all__ = ["diffusion_em", "em_deblur", "em_parametric", "EMResult", "ParametricEMResult", "EMStep", "MStep",
           "delta_kernel", "edge_taper", "latent_autoencoder", "DEFAULT_STEPS", "HQS_DELTA", "HQS_ITERS", "HQS_LAMBDA",
           "GUIDANCE_SCALE", "LATENT_GUIDANCE_SCALE", "GLUING", "M_STEP_DOMAIN", "LATENT_M_STEP_DOMAIN",
           "M_STEP_START_FRACTION", "LATENT_M_STEP_START_FRACTION"]

# m_step(image (1, C, H, W) in [0, 1], params) -> the updated params
MStep = Callable[[Tensor, dict], dict]
_CIRCULAR_BLUR = Blur(padding="circular")  # the kernel M-step's model (hqs_kernel_update assumes a circular boundary)

DEFAULT_STEPS = 100  # DDIM steps T (CPU size)
HQS_DELTA = 5e6      # the M-step's HQS penalty delta (issue 16: alpha = sigma^2 delta)
HQS_ITERS = 20       # HQS iterations per M-step (issue 16)
HQS_LAMBDA = 1.0     # the kernel prior's weight lambda (issue 16); the denoiser's level is sqrt(lambda / delta)
# zeta', the E-step's step on grad ||r|| before the annealing's 1 / zeta_t (e_step's docstring: the paper's
# 1 / (2 zeta_t sigma^2) diverges in pixel space). Chosen on two 64 x 64 crops of astronaut (a *train* photo; rows
# 200 and 330, columns 200 and 150), two 13 x 13 motion kernels (generator seed 7), noise 0.01, 100 steps: mean
# kernel MNC 0.588 / 0.759 / 0.703 / 0.744 / 0.577 and mean PSNR 17.4 / 17.9 / 16.0 / 15.6 / 11.6 dB at
# zeta' = 3 / 10 / 20 / 30 / 100 (python scripts/latentdem_quality.py measures on the test photos, which chose nothing).
GUIDANCE_SCALE = 10.0
# The latent variant's zeta' and gamma (the gluing step on grad ||g||, e_step's docstring), chosen on 64 x 64 centre
# crops of the *train* photos astronaut, motorcycle_left and rocket, two 13 x 13 motion kernels (generator seed 7),
# noise 0.01, 100 steps, the shipped latent_tiny and kernel denoiser (mean of the 6 cases; measurement 15.92 dB):
#   gamma = 0, zeta' = 1 / 3 / 5 / 10 / 20 / 30: MNC 0.559 / 0.770 / 0.648 / 0.703 / 0.667 / 0.645,
#     PSNR 18.22 / 19.73 / 18.71 / 18.40 / 16.48 / 15.89 dB;
#   zeta' = 3, gamma = 0.1 / 0.3 / 1 / 3: MNC 0.768 / 0.715 / 0.752 / 0.710, PSNR 19.67 / 19.23 / 19.74 / 19.03 dB.
# The paper's unnormalised w_t = 1 / (2 zeta_t sigma^2) (zeta' = 5000 on ||r||^2) gave MNC 0.494, PSNR 8.74 dB (and
# 0.504 / 10.77 dB at a tenth of it), hence the normalised step here too. Again with z_T seed 3 (zeta' = 3):
# gamma = 0 / 0.1 / 1: MNC 0.674 / 0.667 / 0.648, PSNR 19.47 / 19.40 / 19.23 dB. The gluing term never helped: gamma =
# 0.1 lost 0.002 and 0.007 MNC, 0.06 and 0.07 dB on the two seeds (small against the per-case spread, but the same
# sign both times), larger gamma more, so it is off by default; ``gluing=`` turns it on.
LATENT_GUIDANCE_SCALE = 3.0
GLUING = 0.0
# The M-step's edge taper (em_deblur's taper, edge_taper) is off by default, for both variants: on camera-blurred
# crops of the *train* photos it helped the latent variant's 13 x 13 table (scripts/latentdem_quality.py --split
# train --blur valid: MNC 0.565 -> 0.678, EM image 19.07 -> 19.44 dB) but lowered the latent command path's kernel
# and output (scripts/latentdem_photo_policy.py --latent, 17 x 17, the pruned kernel + cg: MNC 0.621 -> 0.555,
# output 18.43 -> 16.27 / 19.50 -> 18.00 dB at 64 / 128) and the pixel variant's (MNC 0.737 -> 0.683, output 21.02
# -> 18.13 / 22.37 -> 19.79 dB); mixed on train photos, it stays an option (README "The boundary").
# The M-step's domain (em_deblur's m_step_domain, m_step_hqs: the data term on intensities or on image gradients),
# chosen per variant on camera-blurred crops of the *train* photos through the command's path
# (scripts/latentdem_m_step_domain.py [--latent]: astronaut, motorcycle_left, rocket, two 17 x 17 kernels, 64 / 128
# px, the pruned kernel + cg; intensity -> gradient): the pixel variant lost (MNC 0.737 -> 0.693 / 0.703 -> 0.693,
# output 21.02 -> 20.22 / 22.37 -> 21.75 dB, lower on 10 of 12 cases), the latent one gained (MNC 0.621 -> 0.638 /
# 0.622 -> 0.629, kernel peak 0.038 -> 0.060 against the true 0.095, output 18.43 -> 18.88 / 19.50 -> 20.28 dB,
# higher on 9 of 12 cases). Mixed for the latent variant on the 13 x 13 EM-image table (scripts/latentdem_quality.py
# --split train --blur valid --variants latent --m-step-domain ...: MNC 0.565 -> 0.505, EM image 19.07 -> 18.90 dB,
# both lower on 5 of 6); the command's output decided.
M_STEP_DOMAIN = "intensity"
LATENT_M_STEP_DOMAIN = "gradient"
# The first M-step's t as a fraction of T (em_deblur's m_step_start = int(fraction T): full EM steps above it are
# E-steps with the starting delta kernel). The kernels spread early, on smooth estimates (scripts/
# latentdem_gradient_energy.py, the *train* cases at 64 px, 4 kernels, 12 per variant: by t = 0.4 T the mean kernel
# peak has fallen to 0.53 (pixel) / 0.72 (latent) of the true peak while the image fed to the M-step has only 0.31 /
# 0.13 of the sharp crop's gradient energy), and the later M-steps warm-start from them (README "When the kernel
# spreads"). M-steps only at t <= 0.3 T (chosen from that trajectory), against every full step: latent MNC 0.509 ->
# 0.582 (higher on 10 of 12 cases), peak / true 0.57 -> 1.29, EM image 17.92 -> 20.45 dB (12 of 12), the command's
# output 18.65 -> 21.08 dB (10 of 12; measurement 22.15); at 0.4 / 0.2 T, MNC 0.534 / 0.610, peak / true 0.86 / 1.73
# (0.2 T overshoots toward a delta further; 0.3 T was the held-out tables' setting, so it stays). The pixel variant's
# kernels collapse toward a delta with it (MNC 0.599 -> 0.531, higher on 4 of 12; peak / true 3.2), so it keeps an
# M-step at every full step.
M_STEP_START_FRACTION = 1.0
LATENT_M_STEP_START_FRACTION = 0.3


class EMStep(NamedTuple):
    """One sampler step of the loop: its index ``t`` (T .. 1), ``zeta`` (zeta_t), ``full`` (a full EM step),
    ``residual`` (||y - k * D(z0_hat)|| before the step; NaN on a prior-only step), ``e_seconds`` and ``m_seconds``
    (0 on a prior-only step and with a fixed true kernel)."""

    t: int
    zeta: float
    full: bool
    residual: float
    e_seconds: float
    m_seconds: float


class EMResult(NamedTuple):
    """``image``: (1, C, H, W) in [0, 1] units (not clipped); ``kernel``: (kh, kw), non-negative, sum 1;
    ``steps``: one :class:`EMStep` per sampler step, in order."""

    image: Tensor
    kernel: Tensor
    steps: list[EMStep]


class ParametricEMResult(NamedTuple):
    """``image``: (1, C, H, W) in [0, 1] units (not clipped); ``params``: the operator's parameters, the learnt ones
    estimated; ``sigma``: the noise std (estimated when learnt); ``steps``: one :class:`EMStep` per sampler step."""

    image: Tensor
    params: dict
    sigma: float
    steps: list[EMStep]


def delta_kernel(kernel_size: int, *, dtype=torch.float32, device=None) -> Tensor:
    """A centred (kernel_size, kernel_size) delta: the blur-free starting kernel."""
    kernel = torch.zeros(kernel_size, kernel_size, dtype=dtype, device=device)
    kernel[kernel_size // 2, kernel_size // 2] = 1.0
    return kernel


def edge_taper(size: tuple[int, int], kernel_size: int, *, dtype=torch.float32, device=None) -> Tensor:
    r"""(H, W) the M-step's edge taper: the product of two raised-cosine ramps, :math:`w(d) = \frac12 - \frac12
    \cos(\pi (d + \frac12) / k)` at distance d < k = ``kernel_size`` pixels from the border, 1 further in. The M-step
    multiplies D(z0_hat) and y by it before the FFT update (the ``taper`` of :func:`em_deblur`), so both fade to 0
    at the border and the update's circular wrap-around no longer meets the border a photo's blur has (the scene
    beyond the frame); :math:`w\,(k \circledast x) \approx k \circledast (w x)` where w varies slowly over the
    kernel's width."""
    ramps = []
    for n in size:
        distance = torch.minimum(torch.arange(n), torch.arange(n).flip(0)).to(dtype=torch.float64)
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (distance + 0.5) / kernel_size)
        ramps.append(torch.where(distance < kernel_size, ramp, torch.ones_like(ramp)))
    return (ramps[0][:, None] * ramps[1][None, :]).to(dtype=dtype, device=device)


def _check(y: Tensor, kernel_size: int, sigma: float, true_kernel: Tensor | None) -> None:
    check_measurement(y)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold one image, (1, C, H, W), got {tuple(y.shape)}")
    _validate.positive_int("kernel_size", kernel_size)
    if kernel_size > min(y.shape[-2:]):
        raise ValueError(f"kernel_size must not exceed the image size (H, W) = {tuple(y.shape[-2:])}, got "
                         f"{kernel_size}")
    check_positive("sigma", sigma)
    if true_kernel is not None and (not isinstance(true_kernel, Tensor)
                                    or tuple(true_kernel.shape) != (kernel_size, kernel_size)):
        got = tuple(true_kernel.shape) if isinstance(true_kernel, Tensor) else type(true_kernel).__name__
        raise ValueError(f"true_kernel must be a ({kernel_size}, {kernel_size}) tensor (kernel_size), got {got}")


def latent_autoencoder(prior: Prior, y: Tensor) -> tuple[Autoencoder | None, tuple[int, ...]]:
    """The E-step's D and E for ``prior`` on [0, 1] images like the measurement ``y`` (1, C, H, W), and the sampler
    state's shape: ``(None, y.shape)`` for a pixel prior; for a latent prior (one with ``encode`` and ``decode`` on
    [-1, 1] images: :class:`~blindfast.models.LatentFlowPrior`, the Stable Diffusion prior) D = (decode + 1) / 2,
    E = encode(2 x - 1) and the shape of the latents of such images (1, L, h, w).

    Raises:
        ValueError: for images a latent prior cannot take: ones its encoder refuses (channels, sides not multiples of
            its downsampling factor f) or whose latents its U-Net cannot take (sides not multiples of
            2^(levels - 1)), naming the image shape expected and got.
    """
    image_shape = tuple(y.shape)
    if not (hasattr(prior, "encode") and hasattr(prior, "decode")):
        return None, image_shape
    factor = getattr(prior, "downsampling_factor", None)
    levels = getattr(getattr(prior, "net", None), "channel_mults", None)
    multiple = factor * 2 ** (len(levels) - 1) if factor and levels else factor
    channels = getattr(getattr(prior, "autoencoder", None), "image_channels", "C")
    expected = f"(1, {channels}, H, W) with H and W multiples of {multiple}" if multiple else "its encoder accepts"
    try:
        with torch.no_grad():
            latent_shape = tuple(prior.encode(torch.zeros_like(y)).shape)
    except ValueError as err:
        raise ValueError(f"the latent prior takes images {expected}, got y of shape {image_shape} ({err})") from None
    if multiple and (image_shape[-2] % multiple or image_shape[-1] % multiple):
        raise ValueError(f"the latent prior takes images {expected} (downsampling factor {factor} times its "
                         f"U-Net's {multiple // factor}), got y of shape {image_shape}")
    autoencoder = Autoencoder(decode=lambda z: (prior.decode(z) + 1) / 2, encode=lambda x: prior.encode(2 * x - 1))
    return autoencoder, latent_shape


def diffusion_em(y: Tensor, prior: Prior, op: Operator, params: dict, m_step: MStep | None, *,
                 steps: int = DEFAULT_STEPS, skip_start: int | None = None, skip_every: int = SKIP_EVERY,
                 guidance_scale: float = GUIDANCE_SCALE, gluing: float = 0.0, m_step_start: int | None = None,
                 generator: torch.Generator | None = None, progress: bool = False) -> tuple[Tensor, dict, list[EMStep]]:
    r"""Diffusion EM with any forward operator (the module docstring's loop with :math:`A_\phi` for the blur): one
    DDIM run in which each full EM step guides the step by ``op.A(., **params)`` (the E-step) and then updates the
    parameters by ``m_step(D(z0_hat), params)``. :func:`em_deblur` (the kernel, by HQS) and :func:`em_parametric`
    (an operator's parameters, by gradient) are this loop with their M-step.

    Args:
        y: (1, C, H, W) the measurement in [0, 1] units.
        prior: a pixel :class:`~blindfast.models.Prior` on [-1, 1] images of y's size, or a latent prior
            (:func:`latent_autoencoder`: the state is its latent, D its decoder).
        op, params: the forward operator, one that keeps the image size (blurs), and the starting parameters phi.
        m_step: ``m_step(image, params) -> params`` with image (1, C, H, W) = D(z0_hat) clipped to [0, 1]; None
            holds the parameters fixed (the non-blind bound).
        steps: T, DDIM steps on DDPM's schedule (:func:`blindfast.sampling.ddpm_time_grid`).
        skip_start, skip_every: the skip-gradient schedule's S_T and K (:func:`is_full_em_step`).
        guidance_scale: zeta' >= 0, the E-step's step before the annealing (:data:`GUIDANCE_SCALE`).
        gluing: gamma >= 0, the gluing term's step (used with a latent prior only; needs op's ``A_adjoint``).
        m_step_start: the M-step runs at the full EM steps with t <= m_step_start (in 0..T; the ones above are
            E-steps with the starting parameters); None: at every full EM step.
        generator: draws z_T.
        progress: a tqdm bar over the steps.
    Returns:
        ``(image, params, steps)``: (1, C, H, W) D(z_0) (not clipped), the last parameters, one :class:`EMStep`
        per sampler step, in order.
    """
    _validate.positive_int("steps", steps)
    _validate.real("guidance_scale", guidance_scale, 0)
    _validate.real("gluing", gluing, 0)
    m_step_start = steps if m_step_start is None else _validate.integer("m_step_start", m_step_start, 0)
    if m_step_start > steps:
        raise ValueError(f"m_step_start must lie in 0..T = {steps}, got {m_step_start}")
    autoencoder, state_shape = latent_autoencoder(prior, y)
    decode = to_image if autoencoder is None else autoencoder.decode
    gluing = gluing if autoencoder is not None else 0.0
    alpha_bars = alpha_bar_of_time(ddpm_time_grid(steps)).tolist()  # T + 1 values, the last 1
    z = torch.randn(state_shape, generator=generator, dtype=y.dtype, device=y.device)
    record = []
    for i in tqdm(range(steps), desc="EM", disable=not progress, leave=False):
        t = steps - i
        zeta = annealed_zeta(t, steps)
        full = is_full_em_step(t, steps, skip_start=skip_start, skip_every=skip_every)
        start = time.perf_counter()
        if not full:
            z = prior_ddim_step(prior, z, alpha_bars[i], alpha_bars[i + 1])
            record.append(EMStep(t, zeta, False, math.nan, time.perf_counter() - start, 0.0))
            continue
        z, image, residual = guided_ddim_step(prior, z, alpha_bars[i], alpha_bars[i + 1], y, op, params,
                                              scale=guidance_scale / zeta, autoencoder=autoencoder, gluing=gluing)
        e_done = m_done = time.perf_counter()
        if m_step is not None and t <= m_step_start:
            params = m_step(image.clamp(0, 1), params)
            m_done = time.perf_counter()
        record.append(EMStep(t, zeta, True, residual.item(), e_done - start, m_done - e_done))
    with torch.no_grad():
        return decode(z), params, record


def em_deblur(y: Tensor, prior: Prior, *, kernel_size: int, sigma: float, steps: int = DEFAULT_STEPS,
              kernel_denoiser=None, true_kernel: Tensor | None = None, skip_start: int | None = None,
              skip_every: int = SKIP_EVERY, guidance_scale: float | None = None, gluing: float = GLUING,
              delta: float = HQS_DELTA, lam: float = HQS_LAMBDA, taper: bool = False,
              m_step_domain: str | None = None, m_step_start: int | None = None,
              generator: torch.Generator | None = None, progress: bool = False) -> EMResult:
    r"""Blind deblurring by LatentDEM's EM loop with a latent or a pixel prior (module docstring).

    The E-step's step is ``guidance_scale`` / zeta_t on the gradient of the residual's norm (see
    :mod:`blindfast.methods.latent_dem.e_step` for why not the paper's 1 / (2 zeta_t sigma^2)); the M-step is
    :func:`blindfast.ops.hqs_kernel_update` with :data:`HQS_ITERS` iterations on the clipped D(z0_hat), warm-started
    from the last kernel. The kernel starts as a centred delta (:func:`delta_kernel`): no blur size assumed. An
    isotropic Gaussian start did not clearly do better on the four 64 x 64 cases of scripts/latentdem_quality.py
    (mean kernel MNC 0.67 from the delta, 0.62 from a Gaussian of std 1, 0.69 from std 2; PSNR within 1.1 dB either
    way).

    Args:
        y: (1, C, H, W) the blurred, noisy measurement in [0, 1] units (circular blur).
        prior: a latent prior (e.g. the shipped ``latent_tiny``: the latent variant, :func:`latent_autoencoder`) or a
            pixel :class:`~blindfast.models.Prior` on [-1, 1] images of y's size.
        kernel_size: the kernel's side k (odd), k <= min(H, W).
        sigma: the measurement noise std (> 0).
        steps: T, DDIM steps on DDPM's schedule (:func:`blindfast.sampling.ddpm_time_grid`).
        kernel_denoiser: the M-step's plug-and-play kernel denoiser (e.g.
            :func:`~blindfast.methods.latent_dem.load_kernel_denoiser`); None for plain HQS.
        true_kernel: (k, k) a kernel to hold fixed instead of estimating one (no M-step: the non-blind bound).
        skip_start, skip_every: the skip-gradient schedule's S_T and K (:func:`is_full_em_step`).
        guidance_scale: zeta' >= 0, the E-step's step before the annealing; None: :data:`LATENT_GUIDANCE_SCALE` for a
            latent prior, :data:`GUIDANCE_SCALE` for a pixel one.
        gluing: gamma >= 0, the latent E-step's gluing step (:data:`GLUING`; ignored with a pixel prior).
        delta, lam: the M-step's HQS penalty and kernel-prior weight.
        taper: multiply D(z0_hat) and y by :func:`edge_taper` before each M-step (for blurs that are not circular:
            photos; off by default: its effect on the train photos was mixed, see the comment below
            :data:`GLUING`).
        m_step_domain: the M-step's data term on intensities or on image gradients (``"intensity"`` or
            ``"gradient"``, :func:`~blindfast.methods.latent_dem.m_step_hqs.hqs_m_step`); None:
            :data:`LATENT_M_STEP_DOMAIN` for a latent prior, :data:`M_STEP_DOMAIN` for a pixel one.
        m_step_start: M-steps only at the full EM steps with t <= m_step_start (in 0..T; the kernel is the delta
            before); None: int(fraction T) with :data:`LATENT_M_STEP_START_FRACTION` for a latent prior,
            :data:`M_STEP_START_FRACTION` for a pixel one (the comment there).
        generator: draws z_T.
        progress: a tqdm bar over the steps.
    Returns:
        :class:`EMResult`.
    """
    _check(y, kernel_size, sigma, true_kernel)
    if m_step_domain is not None and m_step_domain not in M_STEP_DOMAINS:
        raise ValueError(f"m_step_domain must be None or one of {M_STEP_DOMAINS}, got {m_step_domain!r}")
    if guidance_scale is None or m_step_domain is None or m_step_start is None:
        latent = latent_autoencoder(prior, y)[0] is not None
        if guidance_scale is None:
            guidance_scale = LATENT_GUIDANCE_SCALE if latent else GUIDANCE_SCALE
        if m_step_domain is None:
            m_step_domain = LATENT_M_STEP_DOMAIN if latent else M_STEP_DOMAIN
        if m_step_start is None:
            m_step_start = int((LATENT_M_STEP_START_FRACTION if latent else M_STEP_START_FRACTION) * steps)
    kernel = delta_kernel(kernel_size, dtype=y.dtype, device=y.device) if true_kernel is None \
        else true_kernel.to(y)
    window = edge_taper(tuple(y.shape[-2:]), kernel_size, dtype=y.dtype, device=y.device) if taper else None
    y_seen = y[0] if window is None else y[0] * window   # the M-step's measurement, tapered once

    def kernel_m_step(image: Tensor, params: dict) -> dict:
        image_seen = image if window is None else image * window
        return {"kernel": hqs_m_step(image_seen, y_seen, params["kernel"], sigma=sigma, delta=delta,
                                     iters=HQS_ITERS, lam=lam, denoiser=kernel_denoiser, domain=m_step_domain)}

    image, params, record = diffusion_em(y, prior, _CIRCULAR_BLUR, {"kernel": kernel},
                                         kernel_m_step if true_kernel is None else None, steps=steps,
                                         skip_start=skip_start, skip_every=skip_every, guidance_scale=guidance_scale,
                                         gluing=gluing, m_step_start=m_step_start, generator=generator,
                                         progress=progress)
    return EMResult(image, params["kernel"], record)


def em_parametric(y: Tensor, prior: Prior, op: Operator, params: dict, learn: Sequence[str], *, sigma: float,
                  steps: int = DEFAULT_STEPS, iters: int = GRADIENT_ITERS, ranges: dict | None = None,
                  skip_start: int | None = None, skip_every: int = SKIP_EVERY,
                  guidance_scale: float = GUIDANCE_SCALE, generator: torch.Generator | None = None,
                  progress: bool = False) -> ParametricEMResult:
    r"""LatentDEM's EM loop for a non-linear parametric operator (issue 16): the same E-step with ``op.A`` in place
    of the kernel convolution, and the gradient M-step (:func:`~blindfast.methods.latent_dem.m_step_gradient.
    gradient_m_step`, ``iters`` Adam steps warm-started from the last parameters) on D(z0_hat) at each full EM step.

    Args:
        y: (1, C, H, W) the measurement in [0, 1] units.
        prior: a pixel :class:`~blindfast.models.Prior` on [-1, 1] images of y's size.
        op: a size-keeping operator, e.g. :class:`~blindfast.physics.RotationBlur`; params: its starting
            parameters, those in ``learn`` tensors inside their ranges.
        learn: the names to estimate: op's tensor parameters and/or ``"sigma"`` (the noise std).
        sigma: the noise std (> 0), held fixed or the start when learnt. The E-step's normalised step does not
            depend on it; the M-step's objective does when "sigma" is learnt.
        steps, skip_start, skip_every, guidance_scale, generator, progress: as :func:`diffusion_em`.
        iters, ranges: the M-step's Adam steps and valid ranges (:data:`VALID_RANGES` by default).
    Returns:
        :class:`ParametricEMResult`.
    """
    check_measurement(y)
    if y.shape[0] != 1:
        raise ValueError(f"y must hold one image, (1, C, H, W), got {tuple(y.shape)}")
    check_learnable(params, learn, sigma, ranges)
    noise_std = float(sigma)

    def m_step(image: Tensor, current: dict) -> dict:
        nonlocal noise_std
        current, noise_std = gradient_m_step(image, y, op, current, learn, sigma=noise_std, ranges=ranges,
                                             iters=iters)
        return current

    image, params, record = diffusion_em(y, prior, op, dict(params), m_step, steps=steps, skip_start=skip_start,
                                         skip_every=skip_every, guidance_scale=guidance_scale, generator=generator,
                                         progress=progress)
    return ParametricEMResult(image, params, noise_std, record)
