"""Fused sampler steps: every Euler / Heun / DDPM / DDIM update (with an optional guidance gradient) in one pass.

All of them are instances of one element-wise op,

    out = a * clamp(p x + q e, lo, hi) + b x + c e + s z + g w,

where ``x`` is the current state, ``e`` the network output (velocity or epsilon), ``z`` noise or a second velocity,
``w`` a guidance gradient, and ``p x + q e`` the denoised estimate when a step clips it. The functions below compute
the scalar coefficients from the schedule and call that op once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.ops import _backend
from blindfast.ops._checks import check_no_autograd, check_out, check_same, check_shape, check_tensor

__all__ = ["euler_step", "heun_step", "ddpm_step", "ddim_step"]

_NO_CLIP = (-math.inf, math.inf)
_COEFFICIENTS = "(a, p, q, lo, hi, b, c, s, g)"


def _check_step(x: Tensor, e: Tensor, z: Tensor | None, w: Tensor | None, coefficients: list[float]) -> None:
    """The checker of the fused_step ops (the public functions call it too): x, e and the given z, w of one shape,
    dtype and device; 9 coefficients, finite but for the clamp bounds lo < hi."""
    names, tensors = ["x", "e"], [x, e]
    for name, t in (("z", z), ("guidance", w)):
        if t is not None:
            names.append(name)
            tensors.append(t)
    for name, t in zip(names, tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_tensor(name, t, t.dim(), "(B, ...)")
        if name != "x":
            check_shape(name, t, x.shape, "the shape of x")
    check_same(tuple(names), tuple(tensors))
    if len(coefficients) != 9:
        raise ValueError(f"coefficients must be the 9 numbers {_COEFFICIENTS}, got {len(coefficients)}: "
                         f"{list(coefficients)}")
    a, p, q, lo, hi, b, c, s, g = coefficients
    if not lo < hi:
        raise ValueError(f"clip_x0 must be (lo, hi) with lo < hi, got ({lo}, {hi})")
    if not all(map(math.isfinite, (a, p, q, b, c, s, g))):
        raise ValueError(f"step coefficients must be finite, got (a, p, q, b, c, s, g) = {[a, p, q, b, c, s, g]}")


def _fused_step_into(x: Tensor, e: Tensor, z: Tensor | None, w: Tensor | None, coefficients: list[float],
                     clip: bool, out: Tensor) -> None:
    """The body of both ops, CPU and CUDA, after the check."""
    if x.device.type == "cuda":
        _backend.triton_kernels("flow").fused_step(x.contiguous(), e.contiguous(),
                                                   z.contiguous() if z is not None else None,
                                                   w.contiguous() if w is not None else None, coefficients, clip, out)
        return
    x, e = x.contiguous(), e.contiguous()
    z = z.contiguous() if z is not None else None
    w = w.contiguous() if w is not None else None
    _backend.cpu().fused_step(x.data_ptr(), e.data_ptr(), z.data_ptr() if z is not None else 0,
                              w.data_ptr() if w is not None else 0, out.data_ptr(), x.numel(), coefficients, clip,
                              x.dtype == torch.float64)


@torch.library.custom_op("blindfast::fused_step", mutates_args=(), device_types=("cpu", "cuda"))
def _fused_step(x: Tensor, e: Tensor, z: Tensor | None, w: Tensor | None, coefficients: list[float],
                clip: bool) -> Tensor:
    """coefficients = (a, p, q, lo, hi, b, c, s, g) of ``a clamp(p x + q e, lo, hi) + b x + c e + s z + g w``."""
    _check_step(x, e, z, w, coefficients)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _fused_step_into(x, e, z, w, coefficients, clip, out)
    return out


@torch.library.custom_op("blindfast::fused_step_out", mutates_args=("out",), device_types=("cpu", "cuda"))
def _fused_step_out(x: Tensor, e: Tensor, z: Tensor | None, w: Tensor | None, coefficients: list[float],
                    clip: bool, out: Tensor) -> None:
    """:func:`_fused_step` written into ``out`` (contiguous; may be ``x`` itself: element i is read before it is
    written). Saves the allocation, which for large tensors costs more than the step (fresh pages fault in)."""
    _check_step(x, e, z, w, coefficients)
    check_out(out, x.shape, x)
    _fused_step_into(x, e, z, w, coefficients, clip, out)


@_fused_step.register_fake
def _(x, e, z, w, coefficients, clip):
    _check_step(x, e, z, w, coefficients)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_fused_step_out.register_fake
def _(x, e, z, w, coefficients, clip, out):
    _check_step(x, e, z, w, coefficients)
    check_out(out, x.shape, x)
    return None


def _step_setup(ctx, inputs, output):
    x, e, z, w, coefficients, clip = inputs
    ctx.save_for_backward(x, e)
    ctx.coefficients, ctx.clip = coefficients, clip


def _step_backward(ctx, grad):
    x, e = ctx.saved_tensors
    a, p, q, lo, hi, b, c, s, g = ctx.coefficients
    # d out / d(p x + q e) = a inside the clamp range, 0 where it clips.
    inner = a if not ctx.clip else a * ((p * x + q * e) > lo).logical_and((p * x + q * e) < hi).to(grad.dtype)
    need = ctx.needs_input_grad
    return (grad * (b + inner * p) if need[0] else None, grad * (c + inner * q) if need[1] else None,
            grad * s if need[2] else None, grad * g if need[3] else None, None, None)


_fused_step.register_autograd(_step_backward, setup_context=_step_setup)


def _step(x: Tensor, e: Tensor, z: Tensor | None, w: Tensor | None, *, a=0.0, p=0.0, q=0.0, b=0.0, c=0.0,
          s=0.0, g=0.0, clip=None, out: Tensor | None = None) -> Tensor:
    lo, hi = _validate.real_pair("clip_x0", clip, "(lo, hi)") if clip is not None else _NO_CLIP
    coefficients = [float(v) for v in (a, p, q, lo, hi, b, c, s, g)]
    _check_step(x, e, z, w, coefficients)  # before the dispatcher, which would refuse a non-tensor less clearly
    if out is None:
        return _fused_step(x, e, z, w, coefficients, clip is not None)
    check_out(out, x.shape, x)
    check_no_autograd(out, (x, e, z, w))
    _fused_step_out(x, e, z, w, coefficients, clip is not None, out)
    return out


def _guidance(guidance: Tensor | None, scale: float) -> tuple[Tensor | None, float]:
    """The guidance term ``- scale * grad`` as (w, g); dropped when there is no gradient."""
    scale = _validate.real("guidance_scale", scale)
    if guidance is None:
        if scale:
            raise ValueError(f"guidance_scale={scale} was given without a guidance gradient")
        return None, 0.0
    return guidance, -float(scale)


def euler_step(x: Tensor, v: Tensor, dt: float, *, guidance: Tensor | None = None, guidance_scale: float = 0.0,
               out: Tensor | None = None) -> Tensor:
    r"""Euler step of the flow ODE: :math:`x_{t+\Delta t} = x_t + \Delta t\, v - \zeta\, \nabla` (one pass).

    Args:
        x: (B, ...) state at time t; v: (B, ...) velocity at (x, t); dt: the time step (t = 0 noise, t = 1 data).
        guidance: optional (B, ...) guidance gradient :math:`\nabla` (e.g. of a data-fidelity term);
        guidance_scale: its step size :math:`\zeta`.
        out: optional contiguous tensor like ``x`` (``x`` itself for an in-place step) that receives the result;
            no autograd.
    Returns:
        (B, ...) the state at t + dt.
    """
    dt = _validate.real("dt", dt)
    w, g = _guidance(guidance, guidance_scale)
    return _step(x, v, None, w, b=1.0, c=dt, g=g, out=out)


def heun_step(x: Tensor, v: Tensor, dt: float, *, v_next: Tensor | None = None, guidance: Tensor | None = None,
              guidance_scale: float = 0.0, out: Tensor | None = None) -> Tensor:
    r"""The two halves of Heun's (2nd order) step of the flow ODE, each in one pass.

    Without ``v_next`` the predictor :math:`\tilde x = x + \Delta t\, v` (an Euler step); with ``v_next``, the
    velocity at :math:`(\tilde x, t + \Delta t)`, the corrector
    :math:`x_{t+\Delta t} = x + \tfrac{\Delta t}{2} (v + v_{next}) - \zeta \nabla` (Karras et al. 2022, Alg. 1).

    Args:
        x: (B, ...) state at t; v: (B, ...) velocity at (x, t); dt: time step.
        v_next: optional (B, ...) velocity at the predicted state.
        guidance, guidance_scale, out: as in :func:`euler_step`.
    Returns:
        (B, ...) the predicted (no ``v_next``) or corrected state at t + dt.
    """
    if v_next is None:
        return euler_step(x, v, dt, guidance=guidance, guidance_scale=guidance_scale, out=out)
    dt = _validate.real("dt", dt)
    w, g = _guidance(guidance, guidance_scale)
    return _step(x, v, v_next, w, b=1.0, c=0.5 * dt, s=0.5 * dt, g=g, out=out)


def _alpha_bars(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float]:
    """The cumulative products as floats, with 0 < alpha_bar_t <= alpha_bar_prev <= 1."""
    alpha_bar_t = _validate.real("alpha_bar_t", alpha_bar_t, 0, 1, low_open=True, high_open=True)
    return alpha_bar_t, _validate.real("alpha_bar_prev", alpha_bar_prev, alpha_bar_t, 1)


def _noise(x: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
    if noise is not None:
        return noise
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def ddpm_step(x_t: Tensor, eps: Tensor, alpha_bar_t: float, alpha_bar_prev: float, *, noise: Tensor | None = None,
              generator: torch.Generator | None = None, guidance: Tensor | None = None, guidance_scale: float = 0.0,
              clip_x0: tuple[float, float] | None = None, out: Tensor | None = None) -> Tensor:
    r"""DDPM ancestral step (Ho et al. 2020, Eq. 6-7 and 15), one pass:

    .. math:: \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}, \quad
              x_{t-1} = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} \hat x_0
                      + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t + \tilde\beta_t^{1/2} z
                      - \zeta \nabla

    with :math:`\alpha_t = \bar\alpha_t / \bar\alpha_{t-1}`, :math:`\beta_t = 1 - \alpha_t`,
    :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t`.

    Args:
        x_t: (B, ...) state; eps: (B, ...) predicted noise.
        alpha_bar_t, alpha_bar_prev: cumulative products at t and t - 1 (``alpha_bar_prev = 1`` on the last step).
        noise: optional (B, ...) standard normal z; drawn from ``generator`` if omitted.
        guidance, guidance_scale: optional guidance gradient and step size (DPS, Chung et al. 2023, Alg. 1).
        clip_x0: optional (lo, hi) to clamp :math:`\hat x_0` (e.g. (-1, 1)).
        out: as in :func:`euler_step`.
    Returns:
        (B, ...) :math:`x_{t-1}`.
    """
    alpha_bar_t, alpha_bar_prev = _alpha_bars(alpha_bar_t, alpha_bar_prev)
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1.0 - alpha_t
    sigma = math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta_t)
    z = _noise(x_t, noise, generator) if sigma > 0 else None
    w, g = _guidance(guidance, guidance_scale)
    return _step(x_t, eps, z, w, a=math.sqrt(alpha_bar_prev) * beta_t / (1.0 - alpha_bar_t),
                 p=1.0 / math.sqrt(alpha_bar_t), q=-math.sqrt((1.0 - alpha_bar_t) / alpha_bar_t),
                 b=math.sqrt(alpha_t) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t), s=sigma, g=g, clip=clip_x0,
                 out=out)


def ddim_step(x_t: Tensor, eps: Tensor, alpha_bar_t: float, alpha_bar_prev: float, *, eta: float = 0.0,
              noise: Tensor | None = None, generator: torch.Generator | None = None,
              guidance: Tensor | None = None, guidance_scale: float = 0.0,
              clip_x0: tuple[float, float] | None = None, out: Tensor | None = None) -> Tensor:
    r"""DDIM step (Song et al. 2021, Eq. 12 and 16), one pass:

    .. math:: x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\,\hat\epsilon
                      + \sigma_t z - \zeta\nabla, \qquad
              \sigma_t = \eta \sqrt{\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}}\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{t-1}}}

    with :math:`\hat x_0` as in :func:`ddpm_step`; with ``clip_x0`` the clamped :math:`\hat x_0` and the
    :math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}` consistent with it.
    ``eta = 0`` is deterministic DDIM, ``eta = 1`` matches DDPM's variance.

    Args: as :func:`ddpm_step`, plus ``eta`` >= 0.
    Returns:
        (B, ...) :math:`x_{t-1}`.
    """
    alpha_bar_t, alpha_bar_prev = _alpha_bars(alpha_bar_t, alpha_bar_prev)
    eta = _validate.real("eta", eta, 0)
    sigma = eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))
    direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma**2, 0.0))
    z = _noise(x_t, noise, generator) if sigma > 0 else None
    w, g = _guidance(guidance, guidance_scale)
    p, q = 1.0 / math.sqrt(alpha_bar_t), -math.sqrt((1.0 - alpha_bar_t) / alpha_bar_t)
    if clip_x0 is None:
        return _step(x_t, eps, z, w, a=math.sqrt(alpha_bar_prev), p=p, q=q, c=direction, s=sigma, g=g, out=out)
    # eps_hat = (x_t - sqrt(ab) x0_hat) / sqrt(1 - ab), folded into the coefficients of x_t and x0_hat.
    root = math.sqrt(1.0 - alpha_bar_t)
    return _step(x_t, eps, z, w, a=math.sqrt(alpha_bar_prev) - direction * math.sqrt(alpha_bar_t) / root, p=p, q=q,
                 b=direction / root, s=sigma, g=g, clip=clip_x0, out=out)
