"""``blindfast deblur --method ddm --psf-grid OUT/psf_grid.npy``: step 3 with the grid ``psf-estimate`` learned."""

from __future__ import annotations


import numpy as np
import torch

from blindfast.arg_types import read_npy
from blindfast.physics import SpaceVaryingBlur
from blindfast.restore.registry import DeblurMethod, MethodResult, register_method

PADDING = "reflect"


def _run(y, options) -> MethodResult:
    """SpaceVaryingBlur with {"psf_grid": (1, C, Gy, Gx, k, k)} from ``options.psf_grid``, psf-estimate's file."""
    if getattr(options, "psf_grid", None) is None:
        raise ValueError("--method ddm restores with the PSF grid that `blindfast psf-estimate` learned: pass "
                         "--psf-grid OUT/psf_grid.npy")
    path = options.psf_grid
    grid = read_npy(path, "--psf-grid")
    if grid.ndim != 6 or grid.shape[0] != 1 or grid.shape[1] != y.shape[1] or not np.issubdtype(grid.dtype,
                                                                                                 np.floating):
        raise ValueError(f"--psf-grid {path}: expected psf-estimate's float (1, {y.shape[1]}, Gy, Gx, k, k) array "
                         f"for this {y.shape[1]}-channel photo, got {grid.dtype} {grid.shape}")
    return MethodResult(SpaceVaryingBlur(padding=PADDING),
                        {"psf_grid": torch.from_numpy(np.ascontiguousarray(grid, np.float32))})


register_method(DeblurMethod("ddm", "the PSF grid learned by `blindfast psf-estimate` (DDM), given by --psf-grid",
                             _run, reads=("psf_grid",)))
