r"""Samplers for a :class:`blindfast.models.prior.Prior`: Euler and Heun on the flow ODE, DDPM and DDIM on its VP view.

One entry point, :func:`sample`, dispatches on ``method``; every update is one fused op of
:mod:`blindfast.ops.sampler_steps`, so this module only builds the time grid, evaluates the prior once per step and
calls the op.

*Flow samplers* (``"euler"``, ``"heun"``) integrate the probability-flow ODE of flow matching (Lipman et al. 2023,
Eq. 1 and 22-23) from noise at t = 0 to data at t = 1,

.. math:: \frac{dx}{dt} = v(x, t), \qquad x(0) = x_0 \sim \mathcal N(0, I),

on a uniform grid :math:`t_i = i / N` by default. Both evaluate the velocity only on [0, 1], where it is finite
(Heun's corrector at t = 1 included), so no grid stops short of 1.

*VP samplers* (``"ddpm"``, ``"ddim"``) run on :math:`z = x_t / s_t`, :math:`s_t = \sqrt{t^2 + (1 - t)^2}`, with
:math:`\bar\alpha(t) = t^2 / (t^2 + (1 - t)^2)` (see :mod:`blindfast.models.prior`): the step from flow time
:math:`t_i` to :math:`t_{i+1}` is DDPM's ancestral step (Ho et al. 2020, Eq. 6-7) or DDIM's (Song et al. 2021,
Eq. 12) from :math:`\bar\alpha(t_i)` to :math:`\bar\alpha(t_{i+1})`. The default grid is :func:`ddpm_time_grid`,
DDPM's linear-β schedule mapped to flow time. The noise prediction is :math:`\hat\epsilon = x_t - t v`, exactly
:meth:`Prior.vp_epsilon` at :math:`\bar\alpha(t)`. It needs :math:`\bar\alpha > 0`, so VP grids start at t > 0.

*Guidance*: one hook for all four methods, ``guidance(x_t, x1_hat, t) -> grad``. At the start of each step it gets
the flow state :math:`x_t` (for DDPM/DDIM :math:`s_t z`), the data estimate :math:`\hat x_1 = x_t + (1 - t) v =`
:meth:`Prior.denoise` (derived from the step's one velocity evaluation) and the flow time t (a float). It returns
:math:`\nabla_{x_t} L`, the gradient of a loss to *decrease*, e.g. :math:`L = \tfrac12 \|y - A(\hat x_1)\|^2`, and
the step subtracts :math:`\zeta \nabla` (DPS, Chung et al. 2023, Alg. 1: :math:`x_{i-1} \leftarrow x'_{i-1} -
\zeta_i \nabla_{x_i} \|y - A(\hat x_0)\|^2`). The VP samplers step in z, so they apply
:math:`\nabla_z L = s_t \nabla_{x_t} L` (the chain rule, folded into the step size). With
``guidance_needs_grad=True`` the hook gets an ``x_t`` that requires grad and an ``x1_hat`` computed from it under
autograd, so DPS is ``lambda x_t, x1_hat, t: torch.autograd.grad(loss(x1_hat), x_t)[0]``. Heun's corrector carries the
gradient of its first stage; the predictor is unguided.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from blindfast import _validate
from blindfast.models.prior import Prior, alpha_bar_of_time, time_of_alpha_bar
from blindfast.ops import ddim_step, ddpm_step, euler_step, heun_step

__all__ = ["sample", "ddpm_time_grid", "uniform_time_grid", "METHODS",
           "DEFAULT_STEPS", "DDPM_TRAIN_STEPS", "DDPM_BETA_START", "DDPM_BETA_END"]

METHODS = ("euler", "heun", "ddpm", "ddim")
DEFAULT_STEPS = 50
# Ho et al. 2020, Sec. 4: T = 1000 steps, beta rising linearly from 1e-4 to 0.02.
DDPM_TRAIN_STEPS = 1000
DDPM_BETA_START = 1e-4
DDPM_BETA_END = 0.02

Guidance = Callable[[Tensor, Tensor, float], Tensor]


def uniform_time_grid(steps: int) -> Tensor:
    r"""The default flow grid :math:`t_i = i / N`, i = 0..N.

    Args:
        steps: N >= 1.
    Returns:
        (N + 1,) float64, from 0 to 1.
    Raises:
        ValueError: steps < 1.
    """
    _check_steps(steps)
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def ddpm_time_grid(steps: int) -> Tensor:
    r"""DDPM's linear-β schedule on ``steps`` of its T = 1000 levels, as flow times, then t = 1.

    .. math:: \beta_k = \beta_1 + \frac{k - 1}{T - 1}(\beta_T - \beta_1), \quad
              \bar\alpha_k = \prod_{j \le k} (1 - \beta_j), \quad t = t(\bar\alpha_{k_i})

    (Ho et al. 2020, Sec. 4; :func:`~blindfast.models.prior.time_of_alpha_bar`) at levels :math:`k_i`, i = 0..N-1,
    evenly spaced (rounded) from T down to 1, so both ends are kept; the last step goes to
    :math:`\bar\alpha = 1` (t = 1). Steps that skip levels are DDIM's sub-sequence τ (Song et al. 2021, Sec. 4.2),
    and DDPM's with the respaced :math:`\beta = 1 - \bar\alpha_{k_{i+1}} / \bar\alpha_{k_i}` (Nichol & Dhariwal
    2021, Sec. 4). The start, :math:`\bar\alpha_T \approx 4.0 \cdot 10^{-5}` (t ≈ 0.0063), is where the sampler
    takes z ~ N(0, I).

    Args:
        steps: N, 1 <= N <= 1000.
    Returns:
        (N + 1,) float64 flow times, increasing from t(ᾱ_T) to 1.
    Raises:
        ValueError: steps < 1 or steps > 1000.
    """
    _check_steps(steps)
    if steps > DDPM_TRAIN_STEPS:
        raise ValueError(f"the DDPM schedule has {DDPM_TRAIN_STEPS} levels, so steps must be <= {DDPM_TRAIN_STEPS} "
                         f"(pass t_schedule for a finer grid), got {steps}")
    betas = torch.linspace(DDPM_BETA_START, DDPM_BETA_END, DDPM_TRAIN_STEPS, dtype=torch.float64)
    alpha_bars = torch.cumprod(1.0 - betas, dim=0)
    levels = torch.linspace(DDPM_TRAIN_STEPS - 1, 0, steps, dtype=torch.float64).round().long()
    times = time_of_alpha_bar(alpha_bars[levels])
    return torch.cat([times, times.new_ones(1)])


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")


def _time_grid(steps: int | None, t_schedule: Tensor | Sequence[float] | None, default) -> Tensor:
    """The (N + 1,) float64 grid from ``steps`` or ``t_schedule``, checked."""
    if t_schedule is None:
        return default(DEFAULT_STEPS if steps is None else steps)
    grid = torch.as_tensor(t_schedule, dtype=torch.float64).detach().cpu()
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"t_schedule must be 1-D with at least 2 times, got shape {tuple(grid.shape)}")
    if not bool(torch.isfinite(grid).all()) or grid.min() < 0 or grid.max() > 1:
        raise ValueError(f"t_schedule must lie in [0, 1], got values from {grid.min().item():.4g} to "
                         f"{grid.max().item():.4g}")
    if not bool((grid[1:] > grid[:-1]).all()):
        first = int(torch.nonzero(grid[1:] <= grid[:-1])[0])
        raise ValueError(f"t_schedule must be strictly increasing, got t[{first}] = {grid[first].item():.6g} "
                         f"followed by t[{first + 1}] = {grid[first + 1].item():.6g}")
    if steps is not None and steps != grid.numel() - 1:
        raise ValueError(f"steps={steps} disagrees with t_schedule, which has {grid.numel()} times "
                         f"({grid.numel() - 1} steps)")
    return grid


def _start(prior: Prior, shape, x_init: Tensor | None, generator: torch.Generator | None,
           dtype: torch.dtype | None, device) -> Tensor:
    """The start state: ``x_init`` (copied, moved to dtype/device when given) or standard normal noise."""
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, H, W) (4 dims), got {tuple(shape)}")
    if x_init is not None:
        if tuple(x_init.shape) != tuple(shape):
            raise ValueError(f"x_init must have the shape {tuple(shape)}, got {tuple(x_init.shape)}")
        return x_init.detach().to(dtype=dtype or x_init.dtype, device=device or x_init.device, copy=True)
    if device is None:
        # The prior's own device, so a network on the GPU samples there without being told.
        device = next((p.device for p in (*prior.parameters(), *prior.buffers())), torch.device("cpu"))
    return torch.randn(tuple(shape), generator=generator, dtype=dtype or torch.get_default_dtype(), device=device)


def _evaluate(prior: Prior, x_t: Tensor, t: float, cond: Tensor | None, guidance: Guidance | None,
              needs_grad: bool) -> tuple[Tensor, Tensor | None]:
    """The velocity at (x_t, t) and the hook's gradient (None without a hook), from one prior evaluation."""
    if guidance is None:
        return prior.velocity(x_t, t, cond), None
    with torch.enable_grad() if needs_grad else contextlib.nullcontext():
        x_in = x_t.detach().requires_grad_(needs_grad)
        velocity = prior.velocity(x_in, t, cond)
        # Prior.denoise's identity on the velocity already computed: a second network call would double the cost.
        x1_hat = x_in + (1.0 - t) * velocity
        grad = guidance(x_in, x1_hat, t)
    if not isinstance(grad, Tensor):
        raise TypeError(f"guidance must return a tensor like x_t {tuple(x_t.shape)}, got {type(grad).__name__}")
    return velocity.detach(), grad.detach()


def _sample_flow(prior: Prior, x: Tensor, grid: Tensor, *, method: str, guidance: Guidance | None = None,
                guidance_scale: float = 1.0, guidance_needs_grad: bool = False, cond: Tensor | None = None,
                progress: bool = False) -> Tensor:
    r"""Euler or Heun (Karras et al. 2022, Alg. 1) on :math:`dx/dt = v(x, t)` over ``grid``:

    .. math:: \text{euler: } x_{i+1} = x_i + h_i v_i - \zeta\nabla_i, \qquad
              \text{heun: } \tilde x = x_i + h_i v_i,\;
              x_{i+1} = x_i + \tfrac{h_i}{2}\big(v_i + v(\tilde x, t_{i+1})\big) - \zeta\nabla_i

    with :math:`h_i = t_{i+1} - t_i`, :math:`v_i = v(x_i, t_i)` and :math:`\nabla_i` the guidance gradient at
    :math:`(x_i, t_i)`. Heun costs two velocity evaluations a step, Euler one.

    Args:
        prior: the prior; x: (B, C, H, W) state at grid[0]; grid: (N + 1,) increasing flow times in [0, 1].
        method: "euler" or "heun"; the rest as in :func:`sample`.
    Returns:
        (B, C, H, W) the state at grid[-1].
    """
    times = grid.tolist()
    with torch.no_grad():
        for i in tqdm(range(len(times) - 1), desc=method, unit="step", disable=not progress, leave=False):
            t, dt = times[i], times[i + 1] - times[i]
            velocity, grad = _evaluate(prior, x, t, cond, guidance, guidance_needs_grad)
            scale = guidance_scale if grad is not None else 0.0
            if method == "euler":
                x = euler_step(x, velocity, dt, guidance=grad, guidance_scale=scale)
            else:
                predicted = heun_step(x, velocity, dt)
                x = heun_step(x, velocity, dt, v_next=prior.velocity(predicted, times[i + 1], cond), guidance=grad,
                              guidance_scale=scale)
    return x


def _sample_vp(prior: Prior, z: Tensor, grid: Tensor, *, method: str, eta: float = 0.0,
              guidance: Guidance | None = None, guidance_scale: float = 1.0, guidance_needs_grad: bool = False,
              generator: torch.Generator | None = None, cond: Tensor | None = None, progress: bool = False) -> Tensor:
    r"""DDPM (Ho et al. 2020, Eq. 6-7) or DDIM (Song et al. 2021, Eq. 12) on the VP view over flow ``grid``:

    .. math:: \bar\alpha_i = \bar\alpha(t_i), \quad \hat\epsilon_i = x_{t_i} - t_i v(x_{t_i}, t_i), \quad
              x_{t_i} = s_{t_i} z_i, \quad z_{i+1} = \mathrm{step}(z_i, \hat\epsilon_i, \bar\alpha_i,
              \bar\alpha_{i+1}) - \zeta s_{t_i} \nabla_i

    with the step of :func:`~blindfast.ops.ddpm_step` / :func:`~blindfast.ops.ddim_step` (noise drawn from
    ``generator``).

    Args:
        prior: the prior; z: (B, C, H, W) VP state at grid[0] (> 0); grid: (N + 1,) increasing flow times in (0, 1].
        method: "ddpm" or "ddim"; eta: DDIM's η >= 0 (0 deterministic, 1 DDPM's variance); the rest as in
            :func:`sample`.
    Returns:
        (B, C, H, W) the *flow* state :math:`s_t z` at t = grid[-1] (z itself when grid[-1] = 1).
    """
    times = grid.tolist()
    alpha_bars = alpha_bar_of_time(grid).tolist()
    scales = [math.sqrt(t * t + (1.0 - t) ** 2) for t in times]
    with torch.no_grad():
        for i in tqdm(range(len(times) - 1), desc=method, unit="step", disable=not progress, leave=False):
            velocity, grad = _evaluate(prior, scales[i] * z, times[i], cond, guidance, guidance_needs_grad)
            eps = scales[i] * z - times[i] * velocity
            scale = guidance_scale * scales[i] if grad is not None else 0.0
            if method == "ddpm":
                z = ddpm_step(z, eps, alpha_bars[i], alpha_bars[i + 1], generator=generator, guidance=grad,
                              guidance_scale=scale)
            else:
                z = ddim_step(z, eps, alpha_bars[i], alpha_bars[i + 1], eta=eta, generator=generator, guidance=grad,
                              guidance_scale=scale)
    return scales[-1] * z


def sample(prior: Prior, shape: Sequence[int], *, method: str = "heun", steps: int | None = None,
           t_schedule: Tensor | Sequence[float] | None = None, eta: float = 0.0, guidance: Guidance | None = None,
           guidance_scale: float = 1.0, guidance_needs_grad: bool = False, generator: torch.Generator | None = None,
           x_init: Tensor | None = None, cond: Tensor | None = None, progress: bool = False,
           dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Tensor:
    r"""Draw samples at t = 1 (data) from ``prior`` with one of :data:`METHODS` (see the module docstring).

    ``"euler"``/``"heun"``: :func:`_sample_flow` on ``t_schedule`` or :func:`uniform_time_grid`;
    ``"ddpm"``/``"ddim"``: :func:`_sample_vp` on ``t_schedule`` or :func:`ddpm_time_grid`. Runs under
    ``torch.no_grad()``; only the guidance hook sees autograd, and only with ``guidance_needs_grad``.

    Args:
        prior: a :class:`~blindfast.models.prior.Prior`.
        shape: (B, C, H, W) of the samples.
        method: "euler", "heun", "ddpm" or "ddim".
        steps: N >= 1 steps (default 50); with ``t_schedule``, None or its length - 1.
        t_schedule: optional (N + 1,) strictly increasing flow times in [0, 1] (in (0, 1] for ddpm/ddim); the
            samplers run from its first to its last time.
        eta: DDIM's η >= 0 (method "ddim" only).
        guidance: optional hook ``(x_t, x1_hat, t) -> grad``, grad like x_t (the gradient of a loss w.r.t. the flow
            state x_t); the step subtracts ``guidance_scale * grad``.
        guidance_scale: ζ; ignored without a hook.
        guidance_needs_grad: hand the hook an ``x_t`` that requires grad and an ``x1_hat`` built from it with
            autograd on (DPS); otherwise both come without a graph.
        generator: draws the start noise and the DDPM/DDIM step noise.
        x_init: optional (B, C, H, W) start state: the flow state at t_schedule[0] for euler/heun (N(0, I) at t = 0),
            the VP state z (DDPM's x_T) for ddpm/ddim; copied, never modified. Default: standard normal noise.
        cond: optional (B, C_cond, H, W) conditioning channels passed to the prior.
        progress: show a tqdm bar.
        dtype, device: of the noise; default torch's default dtype and the prior's device (x_init's own when given).
    Returns:
        (B, C, H, W) the samples at the grid's last time (t = 1 unless ``t_schedule`` ends earlier).
    Raises:
        ValueError: an unknown method, steps < 1 (or > 1000 on the default DDPM grid), a bad ``t_schedule`` (not
            1-D, out of [0, 1], not increasing, starting at 0 for ddpm/ddim, disagreeing with ``steps``), shape not
            4-D, x_init of another shape, eta < 0, eta != 0 for a method other than ddim.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if steps is not None:
        _check_steps(steps)
    eta = _validate.real("eta", eta, 0)
    if eta != 0 and method != "ddim":
        raise ValueError(f"eta is DDIM's parameter; method {method!r} takes eta=0, got eta={eta}")
    options = dict(method=method, guidance=guidance, guidance_scale=guidance_scale,
                   guidance_needs_grad=guidance_needs_grad, cond=cond, progress=progress)
    if method in ("euler", "heun"):
        grid = _time_grid(steps, t_schedule, uniform_time_grid)
        return _sample_flow(prior, _start(prior, shape, x_init, generator, dtype, device), grid, **options)
    grid = _time_grid(steps, t_schedule, ddpm_time_grid)
    if grid[0] <= 0:
        raise ValueError(f"ddpm/ddim need t_schedule[0] > 0 (alpha_bar(0) = 0 leaves no data in z to estimate), got "
                         f"t_schedule[0] = {grid[0].item():.4g}")
    return _sample_vp(prior, _start(prior, shape, x_init, generator, dtype, device), grid, eta=eta,
                     generator=generator, **options)
