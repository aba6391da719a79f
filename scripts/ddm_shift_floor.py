"""How far is the demo lens from itself with the part no unpaired method can see removed?

A PSF shift common to every channel at a field point (distortion) moves the scene's content there; with content
equally likely anywhere in the frame, no distribution of patches changes, so DDM (or any method matching unpaired
photos) cannot learn it. This script removes exactly that from the true grid: at every node, all channels are moved
by the channel-mean centroid (a Fourier shift on a zero-padded window, exact for sub-pixel shifts: a shift and its
inverse return the grid to relative error 0.03; the shifts between channels are kept), and scores the result
against the truth with the issue's metric (``psf_grid_metrics``: one common shift for the whole grid). That score is
a floor under what DDM can reach on this lens by that metric.

    python scripts/ddm_shift_floor.py [--seed 0]
"""

from __future__ import annotations

import argparse

import torch

from blindfast.methods.ddm.demo import DEMO_LENS, GRID, KERNEL_SIZE
from blindfast.metrics import psf_grid_metrics
from blindfast.physics import lens_psf_grid


def centroids(psf_grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, Gy, Gx) row and column centroids of a (1, C, Gy, Gx, k, k) grid, pixels from the window centre."""
    k = psf_grid.shape[-1]
    d = torch.arange(k, dtype=psf_grid.dtype) - k // 2
    return (psf_grid[0].sum(-1) * d).sum(-1), (psf_grid[0].sum(-2) * d).sum(-1)


def shifted(psf_grid: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, pad: int = 16) -> torch.Tensor:
    """Every kernel of a (1, C, Gy, Gx, k, k) grid moved by (rows, cols) pixels, each (C|1, Gy, Gx): a Fourier
    shift of the window zero-padded by ``pad``, clipped at 0 and renormalised to sum 1."""
    k = psf_grid.shape[-1]
    padded = torch.nn.functional.pad(psf_grid, (pad, pad, pad, pad))
    f = torch.fft.fftfreq(k + 2 * pad, dtype=psf_grid.dtype)
    phase = torch.exp(-2j * torch.pi * (f[:, None] * rows[..., None, None] + f[None, :] * cols[..., None, None]))
    moved = torch.fft.ifft2(torch.fft.fft2(padded) * phase).real[..., pad:pad + k, pad:pad + k].clamp_min(0)
    return moved / moved.sum(dim=(-2, -1), keepdim=True)


def without_common_shift(psf_grid: torch.Tensor) -> torch.Tensor:
    """The grid with every node's channel-mean centroid moved to the window centre (channel offsets kept)."""
    rows, cols = centroids(psf_grid)
    return shifted(psf_grid, -rows.mean(0, keepdim=True), -cols.mean(0, keepdim=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = lens_psf_grid(GRID, KERNEL_SIZE, 3, generator=torch.Generator().manual_seed(args.seed),
                          **DEMO_LENS).double()
    rows, cols = centroids(truth)
    common = (rows.mean(0) ** 2 + cols.mean(0) ** 2).sqrt()
    recentred = without_common_shift(truth)
    rows_left, cols_left = centroids(recentred)
    metrics = psf_grid_metrics(recentred.float(), truth.float())
    print(f"largest common centroid shift of a node: {common.max().item():.2f} px, after removing it: "
          f"{(rows_left.mean(0) ** 2 + cols_left.mean(0) ** 2).sqrt().max().item():.3f} px")
    print(f"truth without it, against the truth: relative error {metrics['relative_error'].item():.3f}, "
          f"NCC {metrics['correlation'].item():.3f}")


if __name__ == "__main__":
    main()
