"""Checks shared by the solvers: the operator's parameters against the measurement, and positive weights.

Each error names what was expected and what was got, so a command line can show it as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from blindfast import _validate
from blindfast.physics import Blur, LinearOperator, SpaceVaryingBlur

__all__ = ["check_measurement", "check_positive", "check_blur_params"]


def check_measurement(y) -> None:
    """``y`` is a finite floating (B, C, H, W) tensor."""
    if not isinstance(y, Tensor) or y.dim() != 4 or not y.is_floating_point():
        got = f"shape {tuple(y.shape)}, dtype {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a floating (B, C, H, W) tensor, got {got}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y must be finite, got NaN or infinite values")


def check_positive(name: str, value) -> float:
    """``value`` as a float > 0 (and finite): the public API's check (:func:`blindfast._validate.real`)."""
    return _validate.real(name, value, 0, low_open=True)


def _check_kernels(name: str, kernels: Tensor, what: str) -> None:
    """Finite kernels (..., kh, kw) with a positive sum each (a blur keeps the mean brightness)."""
    if not bool(torch.isfinite(kernels).all()):
        raise ValueError(f"{name} must be finite, got NaN or infinite taps")
    sums = kernels.sum(dim=(-2, -1))
    if bool((sums <= 0).any()):
        raise ValueError(f"each {what} of {name} must have a positive sum (a blur), got sums down to "
                         f"{sums.min().item():.4g}")


def check_blur_params(op: LinearOperator, params: dict, y: Tensor) -> None:
    """For a :class:`Blur` or :class:`SpaceVaryingBlur`: the kernels are finite, sum to > 0, fit in ``y`` and
    match its channels (other operators are left to their own checks).

    Args:
        op: the operator.
        params: its keyword parameters.
        y: (B, C, H, W) the measurement.
    Raises:
        ValueError: a NaN / infinite tap, a kernel with sum <= 0, a kernel larger than the image, channel counts
            that do not broadcast.
    """
    if isinstance(op, Blur):
        kernel = params.get("kernel")
        if isinstance(kernel, Tensor) and kernel.dim() == 2:
            kernel = kernel[None, None]
        name, layout, what = "kernel", "(B|1, C|1, kh, kw)", "kernel"
    elif isinstance(op, SpaceVaryingBlur):
        kernel = params.get("psf_grid")
        name, layout, what = "psf_grid", "(B|1, C|1, Gy, Gx, kh, kw)", "grid kernel"
    else:
        return
    ndim = len(layout.split(","))
    if not isinstance(kernel, Tensor) or kernel.dim() != ndim:
        got = f"shape {tuple(kernel.shape)}" if isinstance(kernel, Tensor) else type(kernel).__name__
        raise ValueError(f"{name} must be a {layout} tensor, got {got}")
    B, C, H, W = y.shape
    if kernel.shape[1] not in (1, C):
        raise ValueError(f"{name} must have 1 or {C} channels (the image's), got {kernel.shape[1]}")
    if kernel.shape[0] not in (1, B):
        raise ValueError(f"{name} must have batch 1 or {B} (the image's), got {kernel.shape[0]}")
    kh, kw = kernel.shape[-2:]
    if kh > H or kw > W:
        raise ValueError(f"{name}'s kernels ({kh}x{kw}) must fit in the image, got image {H}x{W}")
    _check_kernels(name, kernel, what)
