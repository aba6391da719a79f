r"""LatentDEM's M-step for non-linear parametric operators (issue 16, "M-step"): the operator's parameters
:math:`\phi` by gradient descent on the E-step's data term at the current image estimate :math:`\hat x`,

.. math:: \phi \leftarrow \arg\min_\phi\ \frac{\lVert y - A_\phi(\hat x)\rVert^2}{2\sigma^2} + M \log\sigma,

the negative log-likelihood of :math:`y = A_\phi(\hat x) + \sigma n` (:class:`~blindfast.physics.GaussianNoise` on
top of the operator, M the number of measured values: the paper's M-step, the maximisation of
:math:`\log p(y \mid \hat x, \phi)` over the operator's parameters, with the Gaussian likelihood of its E-step).
Autograd reaches every tensor parameter of an operator: :class:`~blindfast.physics.RotationBlur`'s ``angle`` and
``centre``, :class:`~blindfast.physics.ZoomBlur`'s ``zoom`` and ``centre``, and the noise level ``sigma``
itself (``"sigma"`` among the learnt names; its optimum is :math:`\sigma^2 = \lVert r\rVert^2 / M`).

Each learnt parameter stays in its valid range ``(low, high)`` by construction: it is optimised as an unbounded
:math:`u` with :math:`p = low + (high - low)\,\mathrm{sigmoid}(u)` (``sigma``: the same on :math:`\log\sigma`), which
also puts every parameter on the same unitless scale, so one Adam step size serves radians, normalised centres and
zoom factors alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.physics import Operator

__all__ = ["gradient_m_step", "check_learnable", "VALID_RANGES", "GRADIENT_ITERS", "GRADIENT_LR", "NOISE_LEVEL"]

# (low, high) of each parameter the M-step knows; "sigma" on a log scale (a noise std in [0, 1] image units)
VALID_RANGES = {
    "angle": (-math.pi / 2, math.pi / 2),   # RotationBlur: a quarter turn either way, far past CL-DPS's 10-30 degrees
    "centre": (-1.0, 1.0),                  # RotationBlur / ZoomBlur: inside the image (normalised coordinates)
    "zoom": (0.5, 2.0),                     # ZoomBlur: past rotation_params' / zoom_params' 1.05-1.3 both ways
    "sigma": (1e-4, 1.0),                   # GaussianNoise: from 8-bit quantisation noise to the image's range
}
NOISE_LEVEL = "sigma"  # the learnt name that is the likelihood's noise std, not an operator parameter
# Adam steps per M-step inside the EM loop (warm-started from the last parameters, a fresh Adam each time). On 64 x 64
# centre crops of coffee / chelsea rotated by 0.3 rad (noise 0.01, 40 DDIM steps, start 0.6): final angles 0.309 /
# 0.386 with 3 steps, 0.050 on chelsea with 10 (early, blurry estimates pull the angle down; more steps follow them
# further), 0.388 / 0.388 with 1.
GRADIENT_ITERS = 3
GRADIENT_LR = 0.1      # Adam's step on the unbounded u (a sigmoid's slope is 1/4 at the centre of the range)


def _to_unbounded(value: Tensor, low: float, high: float, log: bool) -> Tensor:
    """u with low + (high - low) sigmoid(u) = value (on log values when ``log``); value strictly inside the range."""
    if log:
        value, low, high = value.log(), math.log(low), math.log(high)
    fraction = (value - low) / (high - low)
    return torch.logit(fraction.clamp(1e-6, 1 - 1e-6))


def _from_unbounded(u: Tensor, low: float, high: float, log: bool) -> Tensor:
    if log:
        return torch.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.sigmoid(u))
    return low + (high - low) * torch.sigmoid(u)


def check_learnable(params: Mapping, learn: Sequence[str], sigma: float,
                    ranges: Mapping[str, tuple[float, float]] | None = None) -> dict[str, tuple[float, float]]:
    """That every name in ``learn`` has a valid range and a start strictly inside it (``params[name]``, or
    ``sigma`` for ``"sigma"``), and sigma > 0. Returns the ranges in force: :data:`VALID_RANGES` updated by
    ``ranges``.

    Raises:
        ValueError: no name, a name without a valid range or not a tensor parameter, a start outside its range,
            sigma <= 0.
    """
    ranges = {**VALID_RANGES, **(ranges or {})}
    _validate.real("sigma", sigma, 0, low_open=True)
    if not learn:
        raise ValueError("learn must name at least one parameter, got none")
    for name in learn:
        if name not in ranges:
            raise ValueError(f"learn: expected parameters with a valid range ({', '.join(sorted(ranges))}), got "
                             f"{name!r}")
        low, high = ranges[name]
        if name != NOISE_LEVEL and not isinstance(params.get(name), Tensor):
            got = type(params.get(name)).__name__ if name in params else "no such parameter"
            raise ValueError(f"params[{name!r}] must be a tensor to learn it, got {got}")
        value = torch.as_tensor(sigma) if name == NOISE_LEVEL else params[name].detach()
        if not bool(((value > low) & (value < high)).all()):
            raise ValueError(f"{name} must start strictly inside its valid range ({low}, {high}), got "
                             f"{value.cpu().tolist()}")
    return ranges


def gradient_m_step(x: Tensor, y: Tensor, op: Operator, params: Mapping[str, Tensor], learn: Sequence[str], *,
                    sigma: float, ranges: Mapping[str, tuple[float, float]] | None = None,
                    iters: int = GRADIENT_ITERS, lr: float = GRADIENT_LR) -> tuple[dict, float]:
    r"""Minimise :math:`\lVert y - A_\phi(x)\rVert^2 / (2\sigma^2) + M \log\sigma` over the parameters named in
    ``learn`` by Adam on their unbounded forms (module docstring), the others and x held fixed.

    Args:
        x: (B, C, H, W) the current image estimate, [0, 1] units (held fixed).
        y: (B, C, Ho, Wo) the measurement, ``op.A(x, **params)``'s shape.
        op: the forward operator (deterministic: noise enters through ``sigma`` only).
        params: op's keyword parameters; those in ``learn`` must be tensors strictly inside their ranges.
        learn: names to optimise: op's tensor parameters and/or ``"sigma"`` (the noise level).
        sigma: the noise std (> 0): held fixed, or the start when ``"sigma"`` is learnt.
        ranges: (low, high) per learnt name, over :data:`VALID_RANGES`.
        iters: Adam steps (>= 1).
        lr: Adam's learning rate on the unbounded forms (> 0).
    Returns:
        ``(params, sigma)``: a copy of ``params`` with the learnt entries replaced (detached, in their ranges, of
        the given shapes and dtypes), and the noise std (the given one unless learnt).
    Raises:
        ValueError: a name without a valid range or not a tensor parameter, a start outside its range, sigma <= 0,
            iters < 1, lr <= 0, x or y not (B, C, H, W).
    """
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor) or value.ndim != 4 or not value.is_floating_point():
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a floating-point (B, C, H, W) tensor, got {got}")
    ranges = check_learnable(params, learn, sigma, ranges)
    iters = _validate.positive_int("iters", iters)
    lr = _validate.real("lr", lr, 0, low_open=True)
    x, y = x.detach(), y.detach()
    starts = {name: (x.new_tensor(sigma) if name == NOISE_LEVEL else params[name].detach().to(x)) for name in learn}
    unbounded = {name: _to_unbounded(start, *ranges[name], log=name == NOISE_LEVEL).requires_grad_(True)
                 for name, start in starts.items()}
    optimiser = torch.optim.Adam(list(unbounded.values()), lr=lr)

    def current() -> dict[str, Tensor]:
        return {name: _from_unbounded(u, *ranges[name], log=name == NOISE_LEVEL) for name, u in unbounded.items()}

    for _ in range(iters):
        optimiser.zero_grad()
        values = current()
        noise_std = values.pop(NOISE_LEVEL, None)
        residual = y - op.A(x, **{**params, **values})
        if noise_std is None:
            loss = residual.square().mean() / (2 * sigma**2)
        else:  # the negative log-likelihood per measured value (the module docstring's objective / M)
            loss = residual.square().mean() / (2 * noise_std.square()) + noise_std.log()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        values = current()
    learnt_sigma = values.pop(NOISE_LEVEL, None)
    updated = dict(params)
    updated.update({name: value.to(params[name].dtype) for name, value in values.items()})
    return updated, sigma if learnt_sigma is None else learnt_sigma.item()
