"""DDM steps 1 and 2 end to end: a camera's PSF grid from unpaired sharp and blurry photos, with its outputs.

``OUT/psf_grid.npy`` (the estimate, (1, C, Gy, Gx, k, k) float32, each node summing to 1, each node's common
centroid at the window's centre: :mod:`blindfast.methods.ddm.gauge`), ``OUT/psf_grid.png``
(brightened tiles), ``OUT/curve.csv`` and ``OUT/curve.png`` (step 2's loss, and whatever a callback measured),
``OUT/report.json`` (settings, noise level, times), and the two steps' checkpoints under ``OUT/step1`` and
``OUT/step2``: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from blindfast import _validate
from blindfast.atomic_file import save_atomic
from blindfast.figures import curves_figure, psf_grid_image
from blindfast.methods.ddm.corrupted_prior import location_check, train_corrupted_prior
from blindfast.methods.ddm.gauge import centre_nodes, node_centroids
from blindfast.methods.ddm.matching import CURVE_NAME, match_operator
from blindfast.methods.ddm.photos import BlurryPatches, PhotoSet, SharpPatches
from blindfast.methods.ddm.presets import Preset
from blindfast.methods.ddm.sr_operator import positive_normalised
from blindfast.restore.noise_level import estimate_noise_std
from blindfast.train.distributed import World

__all__ = ["estimate_psf", "noise_level", "OUTPUT_FILES"]

OUTPUT_FILES = ("psf_grid.npy", "psf_grid.png", "curve.csv", "curve.png", "report.json")
NOISE_PHOTOS = 4   # the noise level is the median over this many blurry photos' estimates


def noise_level(blurry: PhotoSet) -> float:
    """The blurry photos' noise std (images in [0, 1]): the median of Donoho's estimate over the first photos."""
    estimates = [estimate_noise_std(photo[None].float() / 255) for photo in blurry.photos[:NOISE_PHOTOS]]
    return float(np.median(estimates))


def estimate_psf(sharp: PhotoSet, blurry: PhotoSet, out_dir, *, grid: tuple[int, int], kernel_size: int,
                 preset: Preset, resume: bool = False, device=None, progress: bool = True,
                 callback: Callable[[int, Tensor], dict] | None = None, world: World = World(),
                 factor: int = 1) -> dict:
    """Learns the blurry photos' PSF grid with DDM and writes the outputs (module docstring).

    Args:
        sharp: sharp photos of any size (unpaired with the blurry ones).
        blurry: the camera's blurry photos, all of one frame size.
        grid: (Gy, Gx) nodes; (1, 1) for a uniform blur.
        kernel_size: k, odd.
        preset: the settings (:func:`blindfast.methods.ddm.presets.preset`).
        resume: continue an interrupted run in ``out_dir``.
        device: where the networks train (default: the CPU).
        progress: progress bars.
        callback: ``callback(step, psf_grid) -> dict`` of extra curve columns, see
            :func:`blindfast.methods.ddm.matching.match_operator`.
        world: this process's rank and the number of data-parallel processes (under torchrun: both steps train
            data-parallel; rank 0 writes the outputs).
        factor: super-resolution: the blurry photos are low-resolution, the sharp ones high-resolution, and the
            operator (BlurDownsample's, one kernel on a 1x1 grid) keeps one pixel in ``factor`` after the blur;
            the sharp photos need not be ``factor`` times the blurry ones' size (unpaired). 1: a blur.
    Returns:
        the report (as ``report.json``), on every rank.
    Raises:
        ValueError: mismatched channels, photos smaller than a patch or crop (for SR, a sharp photo smaller than
            factor x patch + kernel - 1), a grid larger than the frame, an even kernel size, a factor > 1 with a
            grid other than 1x1.
        KeyboardInterrupt: the run was interrupted; its checkpoints are saved and ``resume=True`` continues.
    """
    grid = _validate.int_pair("grid", grid, "(Gy, Gx)")
    kernel_size = _validate.positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the PSF's centre on a pixel), got {kernel_size}")
    if sharp.channels != blurry.channels:
        raise ValueError(f"the sharp and blurry photos must have the same channels, got {sharp.channels} and "
                         f"{blurry.channels}")
    factor = _validate.positive_int("factor", factor)
    if factor > 1 and grid != (1, 1):
        raise ValueError(f"super-resolution (factor {factor}) learns one kernel for the frame: expected grid (1, 1), "
                         f"got {grid}")
    frame = blurry.frame_size()
    if grid[0] > frame[0] or grid[1] > frame[1]:
        raise ValueError(f"the grid {grid} must not exceed the blurry frame {frame} (at most one node per pixel)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    blurry_patches = BlurryPatches(blurry, preset.patch)
    sharp_patches = SharpPatches(sharp, preset.patch, kernel_size, frame, factor)
    sigma = noise_level(blurry)

    prior = train_corrupted_prior(blurry_patches, out_dir / "step1", preset.step1, resume=resume, device=device,
                                  progress=progress, world=world)
    step1_s = time.perf_counter() - start
    uses_location = location_check(prior, blurry_patches)
    fit = match_operator(prior, blurry_patches, sharp_patches, grid=grid, kernel_size=kernel_size, sigma=sigma,
                         config=preset.step2, out_dir=out_dir / "step2",
                         resume=resume and (out_dir / "step2").is_dir(), device=device, progress=progress,
                         callback=callback, world=world, factor=factor)
    if fit.interrupted:
        raise KeyboardInterrupt
    step2_s = time.perf_counter() - start - step1_s

    estimate = fit.psf_grid.double()
    if preset.step2.stages[-1].kind == "linear":   # a linear net's kernel is neither >= 0 nor of sum 1 exactly
        estimate = positive_normalised(estimate)
    # the common shift of each node is unobservable from unpaired photos: fixed at zero (gauge.py)
    psf_grid = centre_nodes(estimate).float()
    removed = node_centroids(estimate).norm(dim=-1)
    report = {
        "method": "ddm", "preset": preset.name, "sr_factor": factor, "grid": list(grid), "kernel_size": kernel_size,
        "channels": blurry.channels, "frame": list(frame), "sharp_photos": len(sharp.photos),
        "blurry_photos": len(blurry.photos), "noise_std_estimated": sigma, "patch": preset.patch,
        "step1_location_check": uses_location, "step1": preset.step1.to_json(), "step2": preset.step2.to_json(),
        "step2_steps": fit.steps, "noise_std_learned": fit.noise_std,
        "common_shift_removed_px": {"mean": float(removed.mean()), "max": float(removed.max())},
        "step1_s": step1_s, "step2_s": step2_s, "threads": torch.get_num_threads(),
        "device": str(next(prior.parameters()).device), "processes": world.size,
    }
    if world.rank == 0:
        save_atomic(out_dir / "psf_grid.npy", lambda f: np.save(f, psf_grid.numpy()))
        save_atomic(out_dir / "psf_grid.png", lambda f: psf_grid_image(psf_grid[0]).save(f, "PNG"))
        curve = (out_dir / "step2" / CURVE_NAME).read_text()
        save_atomic(out_dir / "curve.csv", lambda f: f.write(curve.encode()))
        save_atomic(out_dir / "curve.png", lambda f: _curve_figure(curve, preset.name).save(f, "PNG"))
        save_atomic(out_dir / "report.json", lambda f: f.write(json.dumps(report, indent=2).encode()))
    return report


def _curve_figure(curve_csv: str, preset_name: str):
    """curve.png: the operator loss (a running mean over 25 steps) and every measured column against the step."""
    rows = list(csv.DictReader(io.StringIO(curve_csv)))
    steps = [int(row["step"]) for row in rows]
    loss = np.array([float(row["loss"]) for row in rows])
    window = min(25, max(len(loss), 1))
    smooth = np.convolve(loss, np.ones(window) / window, mode="same") if len(loss) else loss
    series = {"operator loss (running mean)": list(smooth)}
    for column in rows[0].keys() if rows else []:
        if column not in ("step", "stage", "loss"):
            series[column] = [float(row[column]) if row[column] else math.nan for row in rows]
    return curves_figure(steps, series, xlabel="step 2: operator step", title=f"DDM, preset {preset_name}")
