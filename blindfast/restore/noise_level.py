r"""The measurement's noise level, and the Tikhonov weight it implies.

The noise std is estimated from the finest diagonal Haar detail, where a blurred photo has almost no signal:
:math:`\hat\sigma = \operatorname{median}|HH| / 0.6745` (Donoho & Johnstone 1994, "Ideal spatial adaptation by
wavelet shrinkage", Sec. 4.2; 0.6745 is the median of |N(0, 1)|).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["estimate_noise_std", "tikhonov_weight", "GRADIENT_STD"]

# The std of a natural photo's forward differences in [0, 1] units, as a Gaussian prior on D x: lam = sigma^2 /
# GRADIENT_STD^2 is then the MAP weight. At sigma = 0.01 it gives lam = 1e-2, the weight the demo measured best
# (astronaut 512^2, 8x8 lens of size 31: 30.24 dB at 1e-2 vs 29.94 at 5e-3 and 30.06 at 2e-2).
GRADIENT_STD = 0.1


def estimate_noise_std(y: Tensor) -> float:
    """Donoho's MAD estimate of white noise's std (module docstring).

    Args:
        y: (B, C, H, W) with H, W >= 2.
    Returns:
        sigma, in y's units.
    """
    H, W = y.shape[-2:]
    blocks = y[..., : H // 2 * 2, : W // 2 * 2]
    a, b = blocks[..., 0::2, 0::2], blocks[..., 0::2, 1::2]
    c, d = blocks[..., 1::2, 0::2], blocks[..., 1::2, 1::2]
    diagonal = (a - b - c + d) / 2      # orthonormal Haar HH: white noise keeps its std
    return float(torch.median(diagonal.abs().double()) / 0.6745)


def tikhonov_weight(sigma: float) -> float:
    """lam = (sigma / GRADIENT_STD)^2, the gradient regulariser's weight for noise std ``sigma``."""
    return (sigma / GRADIENT_STD) ** 2
