r"""The part of a PSF grid that unpaired photos cannot tell apart: each node's common shift, fixed at zero.

Shifting every channel's PSF at a node by the same sub-pixel vector moves the image content there (distortion).
Sharp photos seen through a distortion keep their statistics, so unpaired sharp and blurry photos cannot determine
that shift; the channels' shifts relative to each other (lateral colour) show as colour fringes and are learned.
Step 2 leaves the common shift free and it drifts (README, "What DDM reaches here"); restoring with a wrongly
shifted PSF moves the content and costs more PSNR than the blur it removes. :func:`centre_nodes` fixes this gauge as
blind deconvolution fixes its translation ambiguity: each node's channel-mean centroid is moved to the window's
centre, the channels' relative offsets kept. The shift is exact for band-limited kernels (a phase ramp in Fourier
space, on a window zero-padded to twice its size so nothing wraps), then clipped at zero and renormalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["centre_nodes", "node_centroids"]


def node_centroids(psf_grid: Tensor) -> Tensor:
    """(B, C, Gy, Gx, kh, kw) -> (B, Gy, Gx, 2): each node's channel-mean centroid (dy, dx) in pixels from the
    window's centre, the kernels' sums taken as 1."""
    kh, kw = psf_grid.shape[-2:]
    dy = torch.arange(kh, dtype=psf_grid.dtype, device=psf_grid.device) - kh // 2
    dx = torch.arange(kw, dtype=psf_grid.dtype, device=psf_grid.device) - kw // 2
    cy = (psf_grid.sum(-1) * dy).sum(-1) / psf_grid.sum((-2, -1))     # (B, C, Gy, Gx)
    cx = (psf_grid.sum(-2) * dx).sum(-1) / psf_grid.sum((-2, -1))
    return torch.stack([cy.mean(1), cx.mean(1)], dim=-1)


def centre_nodes(psf_grid: Tensor) -> Tensor:
    """Each node's common centroid moved to the window's centre (module docstring).

    Args:
        psf_grid: (B, C, Gy, Gx, kh, kw) non-negative kernels, each summing to 1.
    Returns:
        the same shape and dtype: shifted by minus :func:`node_centroids` (every channel of a node alike), clipped at
        zero and renormalised to sum 1.
    """
    kh, kw = psf_grid.shape[-2:]
    grid = psf_grid.double()
    shift = node_centroids(grid)                                             # (B, Gy, Gx, 2)
    padded = F.pad(grid, (0, kw, 0, kh))                                     # (B, C, Gy, Gx, 2kh, 2kw)
    fy = torch.fft.fftfreq(2 * kh, dtype=torch.float64, device=grid.device)
    fx = torch.fft.rfftfreq(2 * kw, dtype=torch.float64, device=grid.device)
    # f(x + s) has the transform F(u) e^{2 pi i u s}: the content at the centroid s moves to the origin
    phase = fy[:, None] * shift[..., 0, None, None] + fx[None, :] * shift[..., 1, None, None]   # (B, Gy, Gx, ...)
    ramp = torch.exp(2j * torch.pi * phase)
    shifted = torch.fft.irfft2(torch.fft.rfft2(padded) * ramp[:, None], s=(2 * kh, 2 * kw))[..., :kh, :kw]
    shifted = shifted.clamp_min(0)
    return (shifted / shifted.sum((-2, -1), keepdim=True)).to(psf_grid.dtype)
