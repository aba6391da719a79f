"""DDM on a uniform motion blur (issue 15's "uniform motion kernel NCC >= 0.7"), measured beside trivial baselines.

For each kernel seed: a 13x13 camera-shake kernel (``physics.motion_kernel``, intensity 0.5, noise 0.01) "takes"
the blurry frames of :func:`blindfast.methods.ddm.synthetic.synthetic_camera` (each embedded training photo cut in
halves, one sharp, one blurred), DDM (``psf-estimate --uniform``'s path: :func:`estimate_psf` on a 1x1 grid with
the preset's uniform variant) learns the kernel from the unpaired sets, and the script reports:

- the NCC (max over shifts, :func:`blindfast.metrics.ncc`) of the learned kernel, of a delta, of the best isotropic
  Gaussian and of the best anisotropic Gaussian (each the highest NCC over a grid of widths, elongations and angles:
  the ceiling of the first stage), and the learned kernel's NCC and pedestal (the share of its mass in taps below
  5% of its peak) every ``snapshot_steps`` operator steps (the curve);
- the deblurred PSNR on the test photos (coffee, chelsea: 256x256 centre crops, blurred by the true kernel plus
  noise 0.01) by CG (gradient regulariser, one weight from the blurry frames' own noise estimate, as ``deblur``)
  with the learned kernel, the true kernel (the non-blind upper bound), the baselines' kernels, and of the blurry
  input;
- for a staged step 2, the same for the estimate of the stage before the last (e.g. the Gaussian stage that a
  refining stage started from: the step-2 checkpoint keeps it).

    python scripts/ddm_uniform_quality.py --preset demo --kernel-seeds 0 2 --out runs/uniform

writes ``OUT/<preset>_k<seed>/`` (DDM's outputs) and ``OUT/<preset>_uniform.json`` (or ``--json``), and prints a
table; ``--table A.json B.json`` prints the table of earlier runs. An
existing finished step 1 in ``OUT/<preset>_k<seed>/step1`` is reused (``--step1-preset`` takes step 1's settings
from another preset, e.g. ``quality``'s step 2 on the ``demo`` preset's step 1: the report names both). Other step-2
stages on the same step 1 (a refining stage after the Gaussian one; ``--step1-from`` copies the earlier run's):

    python scripts/ddm_uniform_quality.py --preset demo --kernel-seeds 0 2 --out runs/kernel \
        --step1-from runs/uniform --stages gaussian:600:0.02 kernel:300:2e-4 --gaussian-weight 0 \
        --sparsity-fraction 0.1

``--content mosaic`` builds both sets from mosaics of checkerboard blocks of every photo instead of halves
(:func:`blindfast.methods.ddm.synthetic.camera_of`; the JSON records it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from blindfast.methods.ddm.presets import Preset, preset
from blindfast.methods.ddm.synthetic import synthetic_camera
from blindfast.metrics import ncc, psnr
from blindfast.physics import SpaceVaryingBlur, motion_kernel
from blindfast.restore import cg_tikhonov
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight
from ddm_kernel_runs import (best_gaussians, learn_kernel, main, pedestal_mass, previous_stage_kernel,  # scripts/
                             run_timings)

KERNEL_SIZE = 13
INTENSITY = 0.5          # motion_kernel's default: BlindDPS's camera shake
NOISE = 0.01
FRAME = 256
CG_ITERS = 30


def true_kernel(seed: int) -> Tensor:
    """(k, k) float32 the camera-shake kernel of ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return motion_kernel(1, KERNEL_SIZE, INTENSITY, generator=generator)["kernel"][0, 0]


def deblur_psnr(camera, kernels: dict[str, Tensor]) -> dict[str, list[float]]:
    """PSNR (dB, per test photo) of CG with each (k, k) kernel, and of the blurry input."""
    lam = tikhonov_weight(estimate_noise_std(camera.test_blurry))
    operator = SpaceVaryingBlur(padding="reflect")
    out = {"blurry input": psnr(camera.test_blurry.clamp(0, 1), camera.test_sharp).tolist()}
    for name, kernel in kernels.items():
        grid = kernel.float().expand(1, 3, 1, 1, KERNEL_SIZE, KERNEL_SIZE).contiguous()
        restored = cg_tikhonov(camera.test_blurry, operator, {"psf_grid": grid}, lam=lam, iters=CG_ITERS,
                               regulariser="gradient")
        out[name] = psnr(restored.clamp(0, 1), camera.test_sharp).tolist()
    return out


def run_one(kernel_seed: int, chosen: Preset, out_dir: Path, resume: bool, progress: bool, content: str) -> dict:
    kernel = true_kernel(kernel_seed)
    camera = synthetic_camera(kernel.expand(1, 3, 1, 1, KERNEL_SIZE, KERNEL_SIZE).contiguous(), frame=FRAME,
                              noise=NOISE, seed=kernel_seed, content=content)
    baselines = best_gaussians(kernel)
    report, learned, curve = learn_kernel(camera, kernel, chosen, out_dir, resume, progress)
    kernels = {"learned": learned, "true": kernel.double(), **{name: k for name, (k, _) in baselines.items()}}
    previous = previous_stage_kernel(out_dir)
    if previous is not None:
        kernels["previous stage"] = previous
    return {
        "kernel_seed": kernel_seed, "learned_ncc": float(ncc(learned, kernel.double())),
        # the blur's power spectrum, which is what unpaired patches show most plainly, is the same for k(-x)
        "learned_flipped_ncc": float(ncc(learned.flip(-2, -1), kernel.double())),
        "learned_pedestal": pedestal_mass(learned), "true_pedestal": pedestal_mass(kernel),
        "previous_stage": None if previous is None else {"ncc": float(ncc(previous, kernel.double())),
                                                         "pedestal": pedestal_mass(previous)},
        "baseline_ncc": {name: score for name, (_, score) in baselines.items()},
        "ncc_curve": curve, "psnr": deblur_psnr(camera, kernels), **run_timings(report),
    }


def print_table(runs: list[dict]) -> None:
    print(f"{'seed':>4} | {'NCC learned (flipped)':>21} | {'delta':>5} | {'iso G':>5} | {'aniso G':>7} | "
          f"PSNR coffee / chelsea (dB): learned, true, iso G, blurry input")
    for run in runs:
        b, p = run["baseline_ncc"], run["psnr"]
        fmt = lambda name: "/".join(f"{v:.2f}" for v in p[name])  # noqa: E731
        print(f"{run['kernel_seed']:>4} | {run['learned_ncc']:>13.3f} ({run['learned_flipped_ncc']:.3f}) | "
              f"{b['delta']:>5.3f} | "
              f"{b['isotropic Gaussian']:>5.3f} | {b['anisotropic Gaussian']:>7.3f} | {fmt('learned')}, "
              f"{fmt('true')}, {fmt('isotropic Gaussian')}, {fmt('blurry input')}")
        if "learned_pedestal" in run:   # runs stored before the pedestal was recorded have none
            print(f"     pedestal (mass below 5% of the peak): learned {run['learned_pedestal']:.3f}, true "
                  f"{run['true_pedestal']:.3f}")
        if run.get("previous_stage"):
            print(f"     the previous stage's kernel: NCC {run['previous_stage']['ncc']:.3f}, pedestal "
                  f"{run['previous_stage']['pedestal']:.3f}, PSNR {fmt('previous stage')}")
        print("     curve (step: NCC, pedestal): " + ", ".join(
            f"{c['step']}: {c['ncc']:.3f}" + (f", {c['pedestal']:.3f}" if "pedestal" in c else "")
            for c in run["ncc_curve"]))


if __name__ == "__main__":
    main(__doc__.split("\n")[0], name="uniform", default_seeds=[0, 2],
         variant_preset=lambda name, seed: preset(name, seed, uniform=True), run_one=run_one, print_table=print_table,
         settings={"kernel_size": KERNEL_SIZE, "intensity": INTENSITY, "noise": NOISE, "frame": FRAME,
                   "solver": f"cg_tikhonov, gradient, {CG_ITERS} iters"})
