r"""LatentDEM's E-step in pixel space (Bai et al. 2024, "Blind Inversion using Latent Diffusion Priors"; issue 16):
one DDIM step of the prior's VP view (:meth:`blindfast.models.Prior.vp_epsilon`), guided by the likelihood of the
measurement under the current operator :math:`A_\phi` (the blur by the current kernel, :math:`A_\phi x = k
\circledast x`, or any operator with its current parameters),

.. math:: z_{t-1} = \mathrm{DDIM}(z_t) - w_t \nabla_{z_t} \lVert y - A_\phi(D(\hat z_0(z_t)))\rVert^2,
          \qquad \hat z_0 = \frac{z_t - \sqrt{1 - \bar\alpha_t}\,\hat\epsilon(z_t)}{\sqrt{\bar\alpha_t}},

differentiated through the network, with :math:`D(z) = (z + 1) / 2` mapping the prior's [-1, 1] data to [0, 1]
images (the pixel variant: no autoencoder).

The weight. The paper's :math:`w_t = 1 / (2 \zeta_t \sigma^2)` is 5000 / zeta_t at sigma = 0.01: in pixel space
(no decoder Jacobian to shrink the gradient) the first guided step took max |z| to 4.8e3 and the state was NaN by
the seventh (64 x 64 crop of coffee, 13 x 13 motion kernel, the true kernel held fixed, 50 DDIM steps, the shipped
``pixel_tiny``). So the step is DPS's normalised one (Chung et
al. 2023, "Diffusion Posterior Sampling for General Noisy Inverse Problems", Alg. 1), with LatentDEM's annealing kept
in the scale: :math:`w_t = s_t / (2 \lVert r\rVert)`, i.e. :math:`s_t \nabla_{z_t} \lVert r\rVert`,
:math:`r = y - A_\phi(D(\hat z_0))`, :math:`s_t = \zeta' / \zeta_t` (the loop's choice).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from blindfast.models import Prior
from blindfast.ops import ddim_step
from blindfast.physics import Operator

__all__ = ["to_image", "guided_ddim_step", "prior_ddim_step"]


def to_image(z0: Tensor) -> Tensor:
    """D: the prior's [-1, 1] data (B, C, H, W) as [0, 1] images (B, C, H, W)."""
    return (z0 + 1) / 2


def _denoised(z: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    """Tweedie's :math:`\\hat z_0 = (z - \\sqrt{1 - \\bar\\alpha}\\,\\hat\\epsilon) / \\sqrt{\\bar\\alpha}`."""
    return (z - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def prior_ddim_step(prior: Prior, z: Tensor, alpha_bar: float, alpha_bar_prev: float) -> Tensor:
    """A prior-only DDIM step (eta = 0; the skip-gradient schedule's skipped steps).

    Args:
        prior: a pixel prior on [-1, 1] data; z: (B, C, H, W) the VP state at ``alpha_bar``.
        alpha_bar, alpha_bar_prev: the schedule at t and t - 1 (1 on the last step).
    Returns:
        (B, C, H, W) the state at t - 1.
    """
    with torch.no_grad():
        return ddim_step(z, prior.vp_epsilon(z, alpha_bar), alpha_bar, alpha_bar_prev)


def guided_ddim_step(prior: Prior, z: Tensor, alpha_bar: float, alpha_bar_prev: float, y: Tensor, op: Operator,
                     params: dict, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """A likelihood-guided DDIM step (module docstring).

    Args:
        prior: a pixel prior on [-1, 1] data; z: (1, C, H, W) the VP state at ``alpha_bar``.
        alpha_bar, alpha_bar_prev: the schedule at t and t - 1.
        y: (1, C, Ho, Wo) the measurement.
        op, params: the forward operator A_phi and its current parameters phi (e.g. a circular
            :class:`~blindfast.physics.Blur` and ``{"kernel": (kh, kw)}``), held fixed here.
        scale: s_t >= 0, the step on the gradient of the residual's norm (module docstring).
    Returns:
        ``(z_prev, image, residual_norm)``: (1, C, H, W) the state at t - 1, D(z0_hat) (before the step) in [0, 1]
        units, and the () norm of ``y - A_phi(D(z0_hat))``.
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        eps = prior.vp_epsilon(z, alpha_bar)
        image = to_image(_denoised(z, eps, alpha_bar))
        residual = y - op.A(image, **params)
        (grad,) = torch.autograd.grad(residual.square().sum(), z)
    norm = residual.detach().norm()
    # grad ||r|| = grad ||r||^2 / (2 ||r||) (DPS, Alg. 1); a zero residual leaves nothing to follow.
    z_prev = ddim_step(z.detach(), eps.detach(), alpha_bar, alpha_bar_prev, guidance=grad,
                       guidance_scale=scale / (2 * max(norm.item(), torch.finfo(z.dtype).tiny)))
    return z_prev, image.detach(), norm
