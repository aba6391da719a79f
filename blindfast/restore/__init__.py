"""Non-blind restoration: the image given its operator. Every blind method's last step, and its upper bound.

Each solver takes a :mod:`blindfast.physics` operator and its parameters (``op.A(x, **params)``,
``op.A_adjoint``), never a matrix, and (B, C, H, W) batches in [0, 1] units.

| solver | what |
|---|---|
| :func:`wiener` | uniform blur, closed form by FFT; photos on a canvas whose margin is estimated (no edge ringing) |
| :func:`cg_tikhonov` | any linear operator: conjugate gradient on Tikhonov (identity or gradient) least squares |
| :func:`pnp_hqs` | DPIR's half-quadratic splitting with a prior's Tweedie denoiser |
| :func:`diffpir` | DiffPIR on a flow prior |
| :func:`dps` | diffusion posterior sampling through :func:`blindfast.sampling.sample`'s guidance |
| :func:`restore_tiled` | any of them on blended tiles of a large photo (PSF grids tied to absolute positions) |
"""

from blindfast.restore.cg import cg_tikhonov, conjugate_gradient
from blindfast.restore.diffpir import diffpir
from blindfast.restore.dps import dps
from blindfast.restore.pnp_hqs import pnp_hqs
from blindfast.restore.prior_denoiser import PriorDenoiser
from blindfast.restore.tiled import restore_tiled, tile_params
from blindfast.restore.wiener import wiener

__all__ = ["wiener", "cg_tikhonov", "conjugate_gradient", "pnp_hqs", "diffpir", "dps", "PriorDenoiser",
           "restore_tiled", "tile_params"]
