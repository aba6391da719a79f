"""How far is the demo lens from itself with the part no unpaired method can see removed, and what does removing
that part do to a learned grid?

A PSF shift common to every channel at a field point (distortion) moves the scene's content there; with content
equally likely anywhere in the frame, no distribution of patches changes, so DDM (or any method matching unpaired
photos) cannot learn it. ``blindfast.methods.ddm.gauge.centre_nodes`` removes exactly that: at every node all
channels move by the channel-mean centroid (the shifts between channels kept). This script scores the true grid
so treated against the truth with the issue's metric (``psf_grid_metrics``: one common shift for the whole grid)
and deblurs the demo's two test frames with it (CG, as the demo): a ceiling on what DDM can reach on this lens by
those measures. Each ``--grid`` (a ``psf_grid.npy``) is scored the same way as it is and with the gauge applied.

    python scripts/ddm_shift_floor.py [--seed 0] [--grid outputs/demo/ddm/psf_grid.npy ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from blindfast.methods.ddm.demo import CG_ITERS, DEMO_LENS, FRAME, GRID, KERNEL_SIZE, NOISE
from blindfast.methods.ddm.gauge import centre_nodes, node_centroids
from blindfast.methods.ddm.synthetic import synthetic_camera
from blindfast.metrics import psf_grid_metrics, psnr
from blindfast.physics import SpaceVaryingBlur, lens_psf_grid
from blindfast.restore import cg_tikhonov
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", action="append", default=[], help="a learned psf_grid.npy of this lens")
    args = parser.parse_args()
    truth = lens_psf_grid(GRID, KERNEL_SIZE, 3, generator=torch.Generator().manual_seed(args.seed), **DEMO_LENS)
    camera = synthetic_camera(truth, frame=FRAME, noise=NOISE, seed=args.seed)
    lam = tikhonov_weight(estimate_noise_std(camera.test_blurry))

    def score(name: str, grid: torch.Tensor) -> None:
        metrics = psf_grid_metrics(grid.float(), truth)
        restored = cg_tikhonov(camera.test_blurry, SpaceVaryingBlur(padding="reflect"), {"psf_grid": grid.float()},
                               lam=lam, iters=CG_ITERS, regulariser="gradient", progress=False)
        psnrs = " / ".join(f"{v:.2f}" for v in psnr(restored.clamp(0, 1), camera.test_sharp).tolist())
        print(f"{name}: relative error {metrics['relative_error'].item():.3f}, NCC "
              f"{metrics['correlation'].item():.3f}; CG deblurring of the test frames {psnrs} dB")

    shift = node_centroids(truth.double()).norm(dim=-1)
    print(f"largest common centroid shift of a node in the truth: {shift.max().item():.2f} px, after the gauge: "
          f"{node_centroids(centre_nodes(truth.double())).norm(dim=-1).max().item():.3f} px")
    blurry = " / ".join(f"{v:.2f}" for v in psnr(camera.test_blurry.clamp(0, 1), camera.test_sharp).tolist())
    print(f"blurry test frames: {blurry} dB")
    score("true grid", truth)
    score("true grid, common shift removed", centre_nodes(truth.double()))
    for path in args.grid:
        grid = torch.from_numpy(np.load(path)).double()
        score(f"{path} as it is", grid)
        score(f"{path} with the gauge", centre_nodes(grid))


if __name__ == "__main__":
    main()
