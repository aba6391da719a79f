"""The gradient regulariser's finite differences: forward differences with a Neumann (zero-flux) boundary."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gradient", "gradient_adjoint", "add_gradient_normal_"]


def gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences D x, zero across the last row / column (Neumann).

    Args:
        x: (B, C, H, W)
    Returns:
        (gy, gx), each (B, C, H, W).
    """
    gy = torch.nn.functional.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    gx = torch.nn.functional.pad(x[..., 1:] - x[..., :-1], (0, 1))
    return gy, gx


def gradient_adjoint(gy: Tensor, gx: Tensor) -> Tensor:
    """D^T (gy, gx): the exact transpose of :func:`gradient` (a negative divergence).

    Args:
        gy, gx: (B, C, H, W) each.
    Returns:
        (B, C, H, W)
    """
    pad = torch.nn.functional.pad
    dy = pad(gy[..., :-1, :], (0, 0, 1, 0)) - pad(gy[..., :-1, :], (0, 0, 0, 1))
    dx = pad(gx[..., :-1], (1, 0)) - pad(gx[..., :-1], (0, 1))
    return dy + dx


def add_gradient_normal_(out: Tensor, x: Tensor, weight: float) -> Tensor:
    r"""``out += weight * D^T D x`` in place, one difference image alive at a time (large images).

    .. math:: (D^T D x)_i = \sum_{\text{axes}} (x_i - x_{i-1}) - (x_{i+1} - x_i)

    with the missing neighbours of the border pixels left out (the Neumann Laplacian, negated).

    Args:
        out: (B, C, H, W) accumulated into.
        x: (B, C, H, W)
        weight: the regularisation weight.
    Returns:
        ``out``.
    """
    for dim in (-2, -1):
        n = x.shape[dim]
        diff = (x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)).mul_(weight)
        out.narrow(dim, 0, n - 1).sub_(diff)
        out.narrow(dim, 1, n - 1).add_(diff)
        del diff  # else the next axis' difference is computed while this one is still alive: two images
    return out
