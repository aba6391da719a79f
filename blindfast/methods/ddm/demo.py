"""The README's main job: learn a synthetic lens' PSF grid with DDM from unpaired embedded photos, then deblur.

A lens with a known 8x8 grid of RGB PSFs (:func:`blindfast.physics.lens_psf_grid`) "takes" the blurry frames of
:func:`blindfast.methods.ddm.synthetic.synthetic_camera`; DDM (steps 1-2, :func:`estimate_psf`) sees only those and
unpaired sharp frames. Step 3 restores two test frames (photos DDM never saw) by CG with the learned grid, beside
the same solver with the true grid (the non-blind upper bound) and with the trivial baselines' grids. The kernel
metrics (:func:`blindfast.metrics.psf_grid_metrics`, one common shift) are reported beside the baselines': a delta,
the best single isotropic Gaussian, and the best isotropic Gaussian per node and channel.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from blindfast.atomic_file import save_atomic
from blindfast.figures import before_after_image, labelled_row, psf_grid_image
from blindfast.methods.ddm.estimate import estimate_psf
from blindfast.methods.ddm.presets import preset as make_preset
from blindfast.methods.ddm.synthetic import synthetic_camera
from blindfast.metrics import ncc, psf_grid_metrics, psnr, ssim
from blindfast.physics import SpaceVaryingBlur, gaussian_kernel, lens_psf_grid
from blindfast.restore import cg_tikhonov
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight

__all__ = ["run_demo", "DEMO_LENS", "GRID", "KERNEL_SIZE", "OUTPUT_FILES"]

GRID = (8, 8)
KERNEL_SIZE = 19
FRAME = 256
NOISE = 0.01
# A moderate lens whose widest PSF (a corner's, 3 standard deviations plus the colour shift, 8.9 px) fits the 19-pixel
# window: lens_psf_grid's default aberrations scaled to a sharper lens.
DEMO_LENS = {"sigma0": 0.7, "field_blur": 1.0, "astigmatism": 0.7, "coma": 2.0, "lateral_ca": 1.0}
CG_ITERS = 30
OUTPUT_FILES = ("psf_true_vs_learned.png", "before_after.png", "demo_report.json")
_WIDTHS = torch.arange(0.3, 5.0001, 0.05, dtype=torch.float64)   # the isotropic baselines' search grid, pixels


def isotropic_baselines(true_grid: Tensor) -> dict[str, Tensor]:
    """The trivial estimates of a (1, C, Gy, Gx, k, k) grid: "delta", "gaussian" (the one isotropic Gaussian
    closest to all of it) and "gaussian_per_node" (the closest isotropic Gaussian for each node and channel), the
    widths searched every 0.05 pixels from 0.3 to 5, all centred on the window."""
    k = true_grid.shape[-1]
    candidates = torch.stack([gaussian_kernel(k, float(w), dtype=torch.float64) for w in _WIDTHS])  # (n, k, k)
    truth = true_grid[0].double()                                                            # (C, Gy, Gx, k, k)
    errors = (truth[None] - candidates[:, None, None, None]).square().sum(dim=(-2, -1))     # (n, C, Gy, Gx)
    per_node = candidates[errors.argmin(dim=0)]                                              # (C, Gy, Gx, k, k)
    single = candidates[errors.sum(dim=(1, 2, 3)).argmin()].expand_as(truth)
    delta = torch.zeros_like(truth)
    delta[..., k // 2, k // 2] = 1
    return {"delta": delta[None].float(), "gaussian": single[None].float(), "gaussian_per_node": per_node[None].float()}


def _grid_scores(estimate: Tensor, truth: Tensor) -> dict[str, float]:
    """The grid's relative error and NCC at one common shift (:func:`psf_grid_metrics`), and the NCC of each node
    kernel at its own best shift (:func:`ncc`), averaged and at its worst."""
    metrics = psf_grid_metrics(estimate, truth)
    per_node = ncc(estimate.double(), truth.double())                      # (1, C, Gy, Gx)
    return {"relative_error": float(metrics["relative_error"]), "ncc": float(metrics["correlation"]),
            "ncc_per_node_mean": float(per_node.mean()), "ncc_per_node_min": float(per_node.min())}


def run_demo(out_dir, *, preset: str = "demo", seed: int = 0, resume: bool = False, progress: bool = True) -> dict:
    """Runs the main job and writes ``OUT/ddm/*`` (:func:`estimate_psf`'s outputs) and ``OUTPUT_FILES``.

    Args:
        out_dir: the output folder.
        preset: the DDM preset ("demo": <= 10 minutes on 2 cores).
        seed: seeds the lens' variations, the noise and DDM's generators.
        resume: continue an interrupted run in ``out_dir``.
        progress: progress bars.
    Returns:
        the report (as ``demo_report.json``).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    lens = lens_psf_grid(GRID, KERNEL_SIZE, 3, generator=torch.Generator().manual_seed(seed), **DEMO_LENS)
    camera = synthetic_camera(lens, frame=FRAME, noise=NOISE, seed=seed)
    baselines = isotropic_baselines(lens)

    def against_truth(step: int, estimate: Tensor) -> dict:
        metrics = psf_grid_metrics(estimate, lens)
        return {"relative_error": float(metrics["relative_error"]), "ncc": float(metrics["correlation"])}

    ddm = estimate_psf(camera.sharp, camera.blurry, out_dir / "ddm", grid=GRID, kernel_size=KERNEL_SIZE,
                       preset=make_preset(preset, seed), resume=resume, progress=progress, callback=against_truth)
    learned = torch.from_numpy(np.load(out_dir / "ddm" / "psf_grid.npy"))

    restore_start = time.perf_counter()
    grids = {"learned": learned, "true": lens, **baselines}
    # one solver setting for every grid: the weight the blurry test frames' own noise estimate gives (as deblur does)
    lam = tikhonov_weight(estimate_noise_std(camera.test_blurry))
    operator = SpaceVaryingBlur(padding="reflect")
    restored = {name: cg_tikhonov(camera.test_blurry, operator, {"psf_grid": g}, lam=lam, iters=CG_ITERS,
                                  regulariser="gradient", progress=False) for name, g in grids.items()}
    restore_s = time.perf_counter() - restore_start

    sharp = camera.test_sharp
    images = {"blurry": camera.test_blurry, **restored}
    report = {
        "preset": preset, "seed": seed, "lens": {"grid": list(GRID), "kernel_size": KERNEL_SIZE, **DEMO_LENS},
        "frame": FRAME, "noise": NOISE, "noise_estimated": ddm["noise_std_estimated"],
        "noise_learned": ddm["noise_std_learned"], "step1_location_check": ddm["step1_location_check"],
        "kernels": {name: _grid_scores(g, lens) for name, g in grids.items() if name != "true"},
        "psnr": {name: psnr(img.clamp(0, 1), sharp).tolist() for name, img in images.items()},
        "ssim": {name: ssim(img.clamp(0, 1), sharp).tolist() for name, img in images.items()},
        "test_photos": ["coffee", "chelsea"], "solver": f"cg_tikhonov, gradient, lam {lam:.3g}, {CG_ITERS} iters",
        "step1_s": ddm["step1_s"], "step2_s": ddm["step2_s"], "restore_s": restore_s,
    }
    report["total_s"] = time.perf_counter() - start
    save_atomic(out_dir / "psf_true_vs_learned.png",
                lambda f: labelled_row([psf_grid_image(lens[0]), psf_grid_image(learned[0])],
                                       ["true PSF grid", "learned by DDM"]).save(f, "PNG"))
    panels = [(_display(images[name][0]), title, *_scores(report, name))
              for name, title in (("blurry", "blurry"), ("learned", "DDM (learned grid)"),
                                  ("true", "same solver, true grid"))]
    panels.append((_display(sharp[0]), "sharp"))
    save_atomic(out_dir / "before_after.png", lambda f: before_after_image(panels).save(f, "PNG"))
    save_atomic(out_dir / "demo_report.json", lambda f: f.write(json.dumps(report, indent=2).encode()))
    return report


def _scores(report: dict, name: str) -> tuple[float, float]:
    return report["psnr"][name][0], report["ssim"][name][0]


def _display(image: Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W, C) float64 in [0, 1]."""
    return image.clamp(0, 1).permute(1, 2, 0).double().numpy()
