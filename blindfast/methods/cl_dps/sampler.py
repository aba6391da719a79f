r"""CL-DPS's posterior sampling (Ye & Ferrao, Alg. 1): DPS (Chung et al. 2023, Alg. 1) with the patch-wise
contrastive score of :mod:`~blindfast.methods.cl_dps.patch_score` in place of :math:`\|y - A(\hat x_0)\|^2`.

At each step the prior's denoised estimate :math:`\hat x_1(x_t)` is scored against the measurement and the sampler
(:func:`blindfast.sampling.sample`'s guidance hook) subtracts

.. math:: \zeta\, \frac{HW}{n^2}\, \frac{\nabla_{x_t} \mathrm{score}(\hat x_1)}{\rho}, \qquad
          \rho = \sqrt{\tfrac1L \sum_p \|F(P_p y) - F(P_p \hat x_1)\|^2} = \sqrt{2\,(1 + \mathrm{score})},

which is DPS's normalised step :math:`\zeta_i \nabla \|r\|^2` with :math:`\zeta_i = \zeta' / \|r\|` (Chung et al.
2023, Alg. 1) on the feature residual r: with unit features :math:`\|r_p\|^2 = 2 - 2\langle F(P_p y), F(P_p \hat
x_1)\rangle`, so :math:`\nabla \rho^2 / \rho = 2 \nabla \mathrm{score} / \rho`. Two choices, against the official
code's constant scale (``scale`` 0.3 to 50 across its configs, on the raw mean similarity):

- the normalisation by ρ: the score's gradient shrinks as the estimate's features approach y's and changes with the
  encoder; dividing by the residual keeps the step's size set by ζ alone, as DPS does for its pixel residual;
- ρ and the factor HW / n^2 are per patch, not per image: the mean over the L patches alone would shrink each
  pixel's pull as 1 / L on larger images, and the whole-image norm of DPS as 1 / sqrt(L). A pixel lies in about
  c = (n / s)^2 of the L ≈ HW / s^2 patches, so with the factor its pull is the mean of its c patches' pulls,
  whatever the image size and the overlap: a ζ chosen on 64 x 64 crops holds on larger images and other strides.

On 64 x 64 crops of the train photos (README, "CL-DPS: sampling") the normalised step restored 1.4 (zoom) to 1.9
(rotation) dB better than the constant scale, each at its best ζ.

With ``low_pass`` λ > 0 the step adds DPS's normalised step on the low-frequency term of
:mod:`~blindfast.methods.cl_dps.low_pass` (our addition, not the paper's), R = (n^2 / HW) ||G * x̂_1 - G * y||^2,
with the same per-patch-area factor:

.. math:: \lambda\, \frac{HW}{n^2}\, \frac{\nabla_{x_t} R(\hat x_1)}{\sqrt{R}}
          = \lambda\, \frac{\nabla_{x_t} \|G * \hat x_1 - G * y\|^2}{\|G * \hat x_1 - G * y\| / \sqrt{HW / n^2}},

i.e. Chung et al.'s ζ_i ∇||r||^2 with ζ_i = λ / ||r|| on the low-passed residual, measured per patch area as ρ is.
The patch features leave the coarse colour loose; this pins it to the measurement's low-pass, which a blur keeps
(README "Does the guidance over-fit the features?": +1.8 dB rotation, +3.2 dB zoom on the train crops at λ = 0.3,
50 steps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.methods.cl_dps.encoder import ContrastiveEncoder
from blindfast.methods.cl_dps.low_pass import LOW_PASS_SIGMA, LowPassResidual
from blindfast.methods.cl_dps.patch_score import DEFAULT_BATCH, PatchScore, check_geometry
from blindfast.models import Prior
from blindfast.sampling import sample

__all__ = ["cl_dps", "CLDPS_PATCH", "CLDPS_STRIDE", "CLDPS_STEPS", "CLDPS_ZETA", "CLDPS_LOW_PASS"]

CLDPS_PATCH = 64     # the encoder's training patch (the paper's ablation: 128 loses detail)
CLDPS_STRIDE = 32    # README "CL-DPS: sampling": strides 8, 16, 32 restored alike on train crops; 32 is the cheapest
CLDPS_STEPS = 100    # Euler steps of the flow ODE, as restore.dps
CLDPS_ZETA = 30.0    # README "CL-DPS: sampling": the best of 3-100 on train crops
CLDPS_LOW_PASS = 0.3  # README "CL-DPS: sampling": the best of 0, 0.1, 0.3, 1, 3 on train crops


def cl_dps(y: Tensor, prior: Prior, encoder: ContrastiveEncoder, *, patch: int = CLDPS_PATCH,
           stride: int = CLDPS_STRIDE, steps: int = CLDPS_STEPS, zeta: float = CLDPS_ZETA,
           low_pass: float = CLDPS_LOW_PASS, low_pass_sigma: float = LOW_PASS_SIGMA, method: str = "euler",
           batch: int = DEFAULT_BATCH, generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """A posterior sample by CL-DPS (module docstring), on the whole image at once.

    The image is reflect-padded (bottom, right) to a multiple of the U-Net's downsampling and cropped back; the
    encoder's weights get no gradient (``requires_grad`` is switched off for the run and restored after).

    Args:
        y: (1, C, H, W) the measurement in [0, 1].
        prior: a pixel :class:`~blindfast.models.Prior` on [-1, 1] images with C channels.
        encoder: a :class:`ContrastiveEncoder` with C channels.
        patch, stride: the patch grid (:class:`PatchScore`).
        steps: sampler steps.
        zeta: the step-size scale ζ > 0.
        low_pass: λ >= 0, the low-frequency term's step scale (0: the paper's CL-DPS).
        low_pass_sigma: its Gaussian's standard deviation, pixels.
        method: a :data:`blindfast.sampling.METHODS` sampler.
        batch: patches per encoder call.
        generator: draws the start noise (and DDPM's step noise).
        progress: a tqdm bar.
    Returns:
        (1, C, H, W) the sample in [0, 1] (clipped).
    Raises:
        ValueError: as :class:`PatchScore`; a prior whose channels differ from the image's; zeta <= 0; low_pass < 0.
    """
    check_geometry(encoder, y, patch, stride)
    channels = getattr(getattr(prior, "net", None), "image_channels", y.shape[1])
    if channels != y.shape[1]:
        raise ValueError(f"the prior samples {channels}-channel images, got a {y.shape[1]}-channel measurement")
    if not zeta > 0:
        raise ValueError(f"zeta must be > 0, got {zeta!r}")
    if not low_pass >= 0:
        raise ValueError(f"low_pass must be >= 0, got {low_pass!r}")
    H, W = y.shape[-2:]
    multiple = prior.image_multiple
    pad_h, pad_w = -H % multiple, -W % multiple
    y_padded = torch.nn.functional.pad(2 * y - 1, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w \
        else 2 * y - 1
    weights_grad = [p.requires_grad for p in encoder.parameters()]
    encoder.requires_grad_(False)
    try:
        scorer = PatchScore(encoder, y_padded, patch=patch, stride=stride, batch=batch)
        low = LowPassResidual(y_padded, patch=patch, sigma=low_pass_sigma) if low_pass > 0 else None
        area_in_patches = y_padded.shape[-2] * y_padded.shape[-1] / patch ** 2

        def guidance(x_t: Tensor, x1_hat: Tensor, t: float) -> Tensor:
            value, grad = scorer.value_and_grad(x1_hat)
            residual = torch.sqrt(2 * (1 + value)).clamp_min(1e-6)                  # rho, per patch
            step = grad * (zeta * area_in_patches / residual)
            if low is not None:
                with torch.enable_grad():
                    image = x1_hat.detach().requires_grad_(True)
                    low_value = low(image)
                    (low_grad,) = torch.autograd.grad(low_value, image)
                step = step + low_grad * (low_pass * area_in_patches / low_value.detach().sqrt().clamp_min(1e-6))
            (grad_x_t,) = torch.autograd.grad(x1_hat, x_t, grad_outputs=step)
            return grad_x_t

        x1 = sample(prior, tuple(y_padded.shape), method=method, steps=steps, guidance=guidance,
                    guidance_scale=1.0, guidance_needs_grad=True, generator=generator, progress=progress,
                    dtype=y.dtype, device=y.device)
    finally:
        for parameter, flag in zip(encoder.parameters(), weights_grad):
            parameter.requires_grad_(flag)
    return ((x1[..., :H, :W] + 1) / 2).clamp(0, 1)
