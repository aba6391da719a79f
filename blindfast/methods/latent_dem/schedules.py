r"""LatentDEM's two schedules over the sampler's steps (Bai et al. 2024, "Blind Inversion using Latent Diffusion
Priors"; issue 16, "E-step").

Steps are counted as in the paper's algorithm box: ``t = T, T - 1, ..., 1``, ``t = T`` the noisiest.

- Annealing consistency: the E-step's data term is weighted by :math:`1 / (2 \zeta_t \sigma^2)` with
  :math:`\zeta_t` falling linearly from :data:`ZETA_START` = 10 at ``t = T`` to 1 at ``t = 0.6 T``
  (:data:`ZETA_END_FRACTION`), then 1: early estimates :math:`\hat x_0` are poor, so their kernel-dependent
  likelihood is trusted less.
- Skip-gradient: for ``t > S_T`` only every K-th step is a full EM step (guidance and M-step), the others are
  prior-only steps; from ``S_T`` down every step is full. Defaults :math:`S_T = T/2`, :math:`K = 8`.
"""

from __future__ import annotations

from blindfast import _validate

__all__ = ["annealed_zeta", "is_full_em_step", "ZETA_START", "ZETA_END_FRACTION", "SKIP_EVERY",
           "SKIP_START_FRACTION"]

ZETA_START = 10.0          # zeta_T, the paper's annealing start (issue 16)
ZETA_END_FRACTION = 0.6    # zeta_t reaches 1 at t = 0.6 T
SKIP_EVERY = 8             # K, the paper's skip-gradient period
SKIP_START_FRACTION = 0.5  # S_T = T / 2


def _check_step(t: int, steps: int) -> None:
    _validate.positive_int("steps", steps)
    _validate.positive_int("t", t)
    if t > steps:
        raise ValueError(f"t must lie in 1..T = {steps}, got {t}")


def annealed_zeta(t: int, steps: int) -> float:
    r""":math:`\zeta_t = 1 + (\zeta_T - 1) \frac{t - 0.6 T}{0.4 T}` for :math:`t \ge 0.6 T`, else 1 (annealing
    consistency, issue 16).

    Args:
        t: the step, 1 <= t <= T.
        steps: T >= 1.
    Returns:
        zeta_t in [1, 10].
    """
    _check_step(t, steps)
    knee = ZETA_END_FRACTION * steps
    if t <= knee:
        return 1.0
    return 1.0 + (ZETA_START - 1.0) * (t - knee) / (steps - knee)


def is_full_em_step(t: int, steps: int, *, skip_start: int | None = None, skip_every: int = SKIP_EVERY) -> bool:
    r"""Whether step ``t`` is a full EM step (guidance and M-step) under the skip-gradient schedule (issue 16):
    every step with :math:`t \le S_T`; above it only the steps with :math:`t \bmod K = 0`.

    Args:
        t: the step, 1 <= t <= T.
        steps: T >= 1.
        skip_start: S_T in 0..T; default int(T / 2) (:data:`SKIP_START_FRACTION`). S_T = T turns skipping off.
        skip_every: K >= 1; K = 1 turns skipping off.
    Returns:
        True for a full EM step, False for a prior-only step.
    """
    _check_step(t, steps)
    if skip_start is None:
        skip_start = int(SKIP_START_FRACTION * steps)
    skip_start = _validate.integer("skip_start", skip_start, 0)
    if skip_start > steps:
        raise ValueError(f"skip_start must lie in 0..T = {steps}, got {skip_start}")
    skip_every = _validate.positive_int("skip_every", skip_every)
    return t <= skip_start or t % skip_every == 0
