"""Pure-torch references for the fused flow-matching, sampler-step and EMA ops: the unfused expressions, written
as the papers write them (x0_hat first, then the posterior mean), differentiable by autograd."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["flow_interpolate_reference", "flow_matching_loss_reference", "euler_step_reference",
           "heun_step_reference", "ddpm_step_reference", "ddim_step_reference", "power_ema_update_reference"]


def _per_batch(value, x: Tensor) -> Tensor:
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return value.reshape(-1, *([1] * (x.dim() - 1))) if value.dim() else value


def flow_interpolate_reference(x0: Tensor, x1: Tensor, t) -> Tensor:
    t = _per_batch(t, x0)
    return (1 - t) * x0 + t * x1


def flow_matching_loss_reference(v: Tensor, x0: Tensor, x1: Tensor, weight: Tensor | None = None) -> Tensor:
    per_element = (v - (x1 - x0)) ** 2
    if weight is not None:
        per_element = per_element * _per_batch(weight, v)
    return per_element.mean()


def _guided(x: Tensor, guidance: Tensor | None, scale: float) -> Tensor:
    return x if guidance is None else x - scale * guidance


def euler_step_reference(x, v, dt, guidance=None, guidance_scale=0.0):
    return _guided(x + dt * v, guidance, guidance_scale)


def heun_step_reference(x, v, dt, v_next=None, guidance=None, guidance_scale=0.0):
    if v_next is None:
        return euler_step_reference(x, v, dt, guidance, guidance_scale)
    return _guided(x + dt / 2 * (v + v_next), guidance, guidance_scale)


def _x0_hat(x_t, eps, alpha_bar_t, clip_x0):
    x0 = (x_t - math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)
    return x0.clamp(*clip_x0) if clip_x0 is not None else x0


def ddpm_step_reference(x_t, eps, alpha_bar_t, alpha_bar_prev, noise=None, guidance=None, guidance_scale=0.0,
                        clip_x0=None):
    """Ho et al. 2020: posterior mean (Eq. 7) from x0_hat (Eq. 15) plus sqrt(beta_tilde) z."""
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1 - alpha_t
    x0 = _x0_hat(x_t, eps, alpha_bar_t, clip_x0)
    mean = (math.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t) * x0
            + math.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t)
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
    out = mean + math.sqrt(beta_tilde) * noise if beta_tilde > 0 else mean
    return _guided(out, guidance, guidance_scale)


def ddim_step_reference(x_t, eps, alpha_bar_t, alpha_bar_prev, eta=0.0, noise=None, guidance=None,
                        guidance_scale=0.0, clip_x0=None):
    """Song et al. 2021, Eq. 12 with sigma from Eq. 16; eps re-derived from the clipped x0_hat when clipping."""
    sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))
    x0 = _x0_hat(x_t, eps, alpha_bar_t, clip_x0)
    if clip_x0 is not None:
        eps = (x_t - math.sqrt(alpha_bar_t) * x0) / math.sqrt(1 - alpha_bar_t)
    out = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        out = out + sigma * noise
    return _guided(out, guidance, guidance_scale)


def power_ema_update_reference(ema_tensors, tensors, beta: float) -> None:
    torch._foreach_lerp_(list(ema_tensors), list(tensors), 1.0 - beta)
