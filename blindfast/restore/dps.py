r"""Diffusion posterior sampling with a known operator (Chung et al. 2023, "Diffusion Posterior Sampling for General
Noisy Inverse Problems", Alg. 1), through :func:`blindfast.sampling.sample`'s guidance hook: CL-DPS's upper bound.

At each step the sampler moves along the prior's velocity and subtracts

.. math:: \zeta_i \nabla_{x_t} \|y - A(\hat u(x_t))\|^2, \qquad \zeta_i = \frac{\zeta}{\|y - A(\hat u(x_t))\|},

with :math:`\hat u = (\hat x_1 + 1) / 2` the prior's denoised estimate in [0, 1] units, differentiated through the
network (``guidance_needs_grad=True``). The normalisation by the residual is Alg. 1's step size, per image.
Whole images only: the gradient through the network needs the image's activations (use small images or crops).
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast.models import Prior
from blindfast.physics import Operator
from blindfast.restore.validation import check_blur_params, check_measurement, check_positive
from blindfast.sampling import sample

__all__ = ["dps", "DPS_STEPS", "DPS_ZETA"]

DPS_STEPS = 100   # Euler steps of the flow ODE (DPS itself runs 1000 DDPM steps)
DPS_ZETA = 1.0    # Chung et al.'s step-size scale zeta' (they use 0.3 - 1.0 for deblurring)


def dps(y: Tensor, op: Operator, params: dict, prior: Prior, *, image_shape: tuple[int, ...] | None = None,
        steps: int = DPS_STEPS, zeta: float = DPS_ZETA, method: str = "euler",
        generator: torch.Generator | None = None, progress: bool = False) -> Tensor:
    """A posterior sample by DPS (module docstring).

    Args:
        y: (B, C, Ho, Wo) the measurement in [0, 1] units.
        op, params: the operator (linear or not; only ``op.A`` is called, under autograd) and its parameters.
        prior: a pixel :class:`~blindfast.models.Prior` on [-1, 1] images whose H, W the network accepts.
        image_shape: (B, C, H, W) of the image; default y's shape.
        steps: sampler steps.
        zeta: the step-size scale zeta' > 0.
        method: a :data:`blindfast.sampling.METHODS` sampler.
        generator: draws the start noise (and DDPM's step noise).
        progress: a tqdm bar.
    Returns:
        (B, C, H, W) the sample in [0, 1] units (not clipped).
    """
    check_measurement(y)
    zeta = check_positive("zeta", zeta)
    check_blur_params(op, params, y)
    shape = tuple(image_shape or y.shape)

    def guidance(x_t: Tensor, x1_hat: Tensor, t: float) -> Tensor:
        residual = y - op.A((x1_hat + 1) / 2, **params)
        norms = residual.flatten(1).norm(dim=1)                      # (B,)
        (grad,) = torch.autograd.grad(residual.square().sum(), x_t)
        return grad / norms.clamp_min(1e-12).reshape(-1, *([1] * (grad.dim() - 1)))

    x1 = sample(prior, shape, method=method, steps=steps, guidance=guidance, guidance_scale=zeta,
                guidance_needs_grad=True, generator=generator, progress=progress, dtype=y.dtype, device=y.device)
    return (x1 + 1) / 2
