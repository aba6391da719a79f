r"""LatentDEM's E-step, pixel and latent (Bai et al. 2024, "Blind Inversion using Latent Diffusion Priors"; issue 16):
one DDIM step of the prior's VP view (:meth:`blindfast.models.Prior.vp_epsilon`), guided by the likelihood of the
measurement under the current operator :math:`A_\phi` (the blur by the current kernel, :math:`A_\phi x = k
\circledast x`, or any operator with its current parameters),

.. math:: z_{t-1} = \mathrm{DDIM}(z_t) - w_t \nabla_{z_t} \lVert y - A_\phi(D(\hat z_0(z_t)))\rVert^2,
          \qquad \hat z_0 = \frac{z_t - \sqrt{1 - \bar\alpha_t}\,\hat\epsilon(z_t)}{\sqrt{\bar\alpha_t}},

differentiated through the network (Bai et al., Eq. 8-9). D maps the prior's data to [0, 1] images: :math:`D(z) =
(z + 1) / 2` for a pixel prior on [-1, 1] data (:func:`to_image`, the pixel variant), the autoencoder's decoder for a
latent prior (:class:`Autoencoder`, the latent variant), which then adds the gluing term of PSLD (Rout et al. 2023,
"Solving Linear Inverse Problems Provably via Posterior Sampling with Latent Diffusion Models", Eq. 9; ReSample's
consistency, Song et al. 2024) with E the encoder and :math:`A^\top` the operator's adjoint:

.. math:: z_{t-1} \mathrel{-}= \gamma\, \nabla_{z_t} \lVert g\rVert, \qquad
          g = \hat z_0 - E\big(A_\phi^\top y + (I - A_\phi^\top A_\phi)\, D(\hat z_0)\big),

which asks :math:`\hat z_0` to be a fixed point of encoding the decoded image with its measured part replaced by the
measurement's. As PSLD's code does, the gradient is of the norm :math:`\lVert g\rVert` (the normalised step below),
so gamma is a step length in latent units.

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
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from blindfast.models import Prior
from blindfast.ops import ddim_step
from blindfast.physics import Operator

__all__ = ["to_image", "Autoencoder", "gluing_residual", "guidance_gradient", "guided_ddim_step", "prior_ddim_step"]


def to_image(z0: Tensor) -> Tensor:
    """D: the prior's [-1, 1] data (B, C, H, W) as [0, 1] images (B, C, H, W)."""
    return (z0 + 1) / 2


class Autoencoder(NamedTuple):
    """A latent prior's maps between [0, 1] images (1, C, H, W) and its latents (1, L, h, w): ``decode`` (D) and
    ``encode`` (E), both differentiable."""

    decode: Callable[[Tensor], Tensor]
    encode: Callable[[Tensor], Tensor]


def gluing_residual(z0: Tensor, image: Tensor, y: Tensor, op: Operator, params: dict,
                    encode: Callable[[Tensor], Tensor]) -> Tensor:
    r"""PSLD's gluing residual (Rout et al. 2023, Eq. 9) :math:`g = \hat z_0 - E(A^\top y + (I - A^\top A) D(\hat
    z_0))`.

    Args:
        z0: (1, L, h, w) the denoised latent; image: (1, C, H, W) its decoding D(z0) in [0, 1] units.
        y: (1, C, Ho, Wo) the measurement; op, params: the linear operator A_phi (with ``A_adjoint``).
        encode: E, [0, 1] images (1, C, H, W) -> latents (1, L, h, w).
    Returns:
        (1, L, h, w) g.
    """
    glued = op.A_adjoint(y, **params) + image - op.A_adjoint(op.A(image, **params), **params)
    return z0 - encode(glued)


def _denoised(z: Tensor, eps: Tensor, alpha_bar: float) -> Tensor:
    """Tweedie's :math:`\\hat z_0 = (z - \\sqrt{1 - \\bar\\alpha}\\,\\hat\\epsilon) / \\sqrt{\\bar\\alpha}`."""
    return (z - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def prior_ddim_step(prior: Prior, z: Tensor, alpha_bar: float, alpha_bar_prev: float) -> Tensor:
    """A prior-only DDIM step (eta = 0; the skip-gradient schedule's skipped steps): one network evaluation and the
    DDIM update, nothing else (no decoder, no gradient), under ``torch.inference_mode`` (no autograd bookkeeping:
    5 to 7% off a skipped step of the shipped priors at 64 x 64, one thread; the same values as under ``no_grad``).

    Args:
        prior: a pixel prior on [-1, 1] data or a latent prior; z: (B, C, H, W) (pixel) or (B, L, h, w) (latent)
            the VP state at ``alpha_bar``.
        alpha_bar, alpha_bar_prev: the schedule at t and t - 1 (1 on the last step).
    Returns:
        the state at t - 1, z's shape.
    """
    with torch.inference_mode():
        z_prev = ddim_step(z, prior.vp_epsilon(z, alpha_bar), alpha_bar, alpha_bar_prev)
    return z_prev.clone()  # a normal tensor again: the next guided step differentiates with respect to it


def guidance_gradient(prior: Prior, z: Tensor, alpha_bar: float, y: Tensor, op: Operator, params: dict,
                      scale: float, *, autoencoder: Autoencoder | None = None,
                      gluing: float = 0.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""The E-step's guidance :math:`s_t \nabla_{z_t} \lVert r\rVert + \gamma \nabla_{z_t} \lVert g\rVert`
    (module docstring), differentiated through the network (and the autoencoder).

    Args:
        prior, z, alpha_bar, y, op, params, scale: as :func:`guided_ddim_step`.
        autoencoder: D and E of a latent prior; None for a pixel prior on [-1, 1] data (D = :func:`to_image`).
        gluing: gamma >= 0, the gluing term's step (latent priors only; 0 leaves it out).
    Returns:
        ``(guidance, eps, image, residual_norm)``: the state's shape, the network's (detached) epsilon there,
        D(z0_hat) (detached, [0, 1] units) and the () norm of ``y - A_phi(D(z0_hat))``.
    """
    if gluing and autoencoder is None:
        raise ValueError(f"gluing needs a latent prior's autoencoder (a pixel prior has no encoder), got gluing = "
                         f"{gluing} with autoencoder None")
    decode = to_image if autoencoder is None else autoencoder.decode
    z = z.detach().requires_grad_(True)
    tiny = torch.finfo(z.dtype).tiny
    with torch.enable_grad():
        eps = prior.vp_epsilon(z, alpha_bar)
        z0 = _denoised(z, eps, alpha_bar)
        image = decode(z0)
        residual = y - op.A(image, **params)
        norm = residual.square().sum().sqrt()
        # grad ||r|| = grad ||r||^2 / (2 ||r||) (DPS, Alg. 1); a zero residual leaves nothing to follow.
        objective = scale * residual.square().sum() / (2 * max(norm.item(), tiny))
        if gluing:
            glue = gluing_residual(z0, image, y, op, params, autoencoder.encode).square().sum()
            objective = objective + gluing * glue / (2 * max(glue.sqrt().item(), tiny))
        (grad,) = torch.autograd.grad(objective, z)
    return grad, eps.detach(), image.detach(), norm.detach()


def guided_ddim_step(prior: Prior, z: Tensor, alpha_bar: float, alpha_bar_prev: float, y: Tensor, op: Operator,
                     params: dict, scale: float, *, autoencoder: Autoencoder | None = None,
                     gluing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """A likelihood-guided DDIM step (module docstring), with the gluing term for a latent prior.

    Args:
        prior: a pixel prior on [-1, 1] data, or a latent prior with ``autoencoder``; z: (1, C, H, W) (pixel) or
            (1, L, h, w) (latent) the VP state at ``alpha_bar``.
        alpha_bar, alpha_bar_prev: the schedule at t and t - 1.
        y: (1, C, Ho, Wo) the measurement.
        op, params: the forward operator A_phi and its current parameters phi (e.g. a circular
            :class:`~blindfast.physics.Blur` and ``{"kernel": (kh, kw)}``), held fixed here.
        scale: s_t >= 0, the step on the gradient of the residual's norm (module docstring).
        autoencoder, gluing: D and E of a latent prior (None: a pixel prior) and gamma (:func:`guidance_gradient`).
    Returns:
        ``(z_prev, image, residual_norm)``: the state at t - 1, D(z0_hat) (before the step) (1, C, H, W) in [0, 1]
        units, and the () norm of ``y - A_phi(D(z0_hat))``.
    """
    grad, eps, image, norm = guidance_gradient(prior, z, alpha_bar, y, op, params, scale, autoencoder=autoencoder,
                                               gluing=gluing)
    z_prev = ddim_step(z.detach(), eps, alpha_bar, alpha_bar_prev, guidance=grad, guidance_scale=1.0)
    return z_prev, image, norm
