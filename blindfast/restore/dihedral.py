r"""The 8 flips and quarter turns of an image (the dihedral group of the square), and a denoiser run under them.

A denoiser trained on natural images ought to commute with these symmetries, but a small network only roughly
does: its errors differ from one transform to the next. Averaging the 8 transformed-back outputs, DPIR's "x8"
geometric self-ensemble (Zhang et al. 2021, Sec. 5.1.2; Timofte et al. 2016, "Seven ways to improve example-based
single image super resolution", enhanced prediction), averages those errors out at 8 denoiser calls; a
plug-and-play loop can instead use a different transform at each iteration (one call), so that its iterates
average them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["DIHEDRAL_SIZE", "dihedral", "dihedral_inverse", "self_ensemble"]

DIHEDRAL_SIZE = 8   # 4 quarter turns, each with and without a left-right flip


def dihedral(v: Tensor, index: int) -> Tensor:
    """``v`` turned ``index // 2 % 4`` quarter turns (counter-clockwise in the (H, W) plane), then flipped
    left-right when ``index`` is odd (index 0: ``v`` itself, 1: its mirror image).

    Args:
        v: (..., H, W).
        index: which of the 8 transforms (taken modulo 8).
    Returns:
        (..., H, W), or (..., W, H) for an odd number of quarter turns.
    """
    turned = torch.rot90(v, index // 2 % 4, dims=(-2, -1))
    return turned.flip(-1) if index % 2 else turned


def dihedral_inverse(v: Tensor, index: int) -> Tensor:
    """The inverse of :func:`dihedral` with the same ``index``: ``dihedral_inverse(dihedral(v, i), i) == v``."""
    unflipped = v.flip(-1) if index % 2 else v
    return torch.rot90(unflipped, -(index // 2 % 4), dims=(-2, -1))


def self_ensemble(denoiser: Callable[[Tensor, float | Tensor], Tensor], v: Tensor, sigma: float | Tensor,
                  indices=range(DIHEDRAL_SIZE)) -> Tensor:
    r""":math:`\frac{1}{|I|} \sum_{i \in I} T_i^{-1} D(T_i v, \sigma)`, the denoiser averaged over the transforms.

    Args:
        denoiser: ``denoiser(v, sigma)`` -> an image of v's shape.
        v: (B, C, H, W); sigma: the noise std passed on, or a (B|1, 1, H, W) map of them (transformed with v).
        indices: the transforms I (default all 8; one index: that transform alone).
    Returns:
        (B, C, H, W)
    """
    indices = list(indices)
    total = None
    for index in indices:
        level = dihedral(sigma, index) if isinstance(sigma, Tensor) else sigma
        out = dihedral_inverse(denoiser(dihedral(v, index), level), index)
        total = out if total is None else total + out
    return total / len(indices)
