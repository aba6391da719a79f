r"""The data step shared by the plug-and-play solvers: a proximal step on the data term,

.. math:: \operatorname{prox}(z) = \arg\min_x \|A x - y\|^2 + \rho \|x - z\|^2,

in closed form by FFT for a uniform :class:`~blindfast.physics.Blur` (:func:`blindfast.restore.wiener`, reflective
boundary for non-circular paddings) and by warm-started conjugate gradient for any other linear operator
(:class:`~blindfast.physics.SpaceVaryingBlur`).
"""

from __future__ import annotations

from torch import Tensor

from blindfast.physics import Blur, LinearOperator
from blindfast.restore.cg import cg_tikhonov
from blindfast.restore.wiener import wiener

__all__ = ["proximal_data_step", "DEFAULT_DATA_CG_ITERS"]

# CG iterations per data step. Warm-started from the previous iterate, whose error the denoiser has just made
# small, a few iterations suffice; more would undo the regularising effect of stopping early at small rho.
DEFAULT_DATA_CG_ITERS = 10


def proximal_data_step(y: Tensor, op: LinearOperator, params: dict, z: Tensor, rho: float, *,
                       x0: Tensor | None = None, cg_iters: int = DEFAULT_DATA_CG_ITERS) -> Tensor:
    """The minimiser above (FFT) or its CG approximation.

    Args:
        y: (B, C, Ho, Wo) measurement; op, params: the operator and its parameters.
        z: (B, C, H, W) the point the step is pulled towards; rho: the pull's weight > 0.
        x0: CG's start (default ``z``); cg_iters: CG iterations (not used by the FFT path).
    Returns:
        (B, C, H, W)
    """
    if isinstance(op, Blur) and op.padding != "valid":
        return wiener(y, op, params, lam=rho, regulariser="identity", z=z)
    return cg_tikhonov(y, op, params, lam=rho, regulariser="identity", z=z, x0=x0, iters=cg_iters, rtol=1e-6)
