"""DDM on a x2 super-resolution kernel (issue 15's "SR kernel (x2, LinearConvNetKernel) NCC >= 0.8"), measured
beside trivial baselines.

For each kernel seed: a 13x13 anisotropic Gaussian (as KernelGAN's and the paper's SR experiments'; main-axis
width in [1.5, 3] pixels, cross-axis ratio in [0.25, 0.5], any angle: elongated, so that NCC tells it from a disc)
"takes" the low-resolution frames of
:func:`blindfast.methods.ddm.sr_synthetic.sr_camera` (each embedded training photo cut in halves: one half's
256x256 frames stay sharp at full resolution, the other's go through ``BlurDownsample(2)`` and noise 0.01), DDM
(``psf-estimate --sr 2``'s path: :func:`estimate_psf` with ``factor=2`` and the preset's SR variant, a Gaussian
stage then the paper's LinearConvNetKernel) learns the kernel from the unpaired sets, and the script reports:

- the NCC (max over shifts, :func:`blindfast.metrics.ncc`) of the learned kernel, of a delta, of the best isotropic
  and of the best anisotropic Gaussian (each the highest NCC over a grid of widths, elongations and angles), and
  the learned kernel's NCC every ``snapshot_steps`` operator steps (the curve);
- the restoration of the test photos (coffee, chelsea: 256x256 centre crops through the true operator plus noise
  0.01, restored to 256x256) by CG on ``BlurDownsample(2, "reflect")`` (gradient regulariser, the weight from the
  low-resolution frames' own noise estimate, as ``deblur``) with the learned kernel, the true kernel (the
  non-blind upper bound), the best isotropic Gaussian, and bicubic upsampling of the input (on BlurDownsample's
  grid: low-resolution pixel i sits on high-resolution pixel 2 i): PSNR and SSIM.

    python scripts/ddm_sr_quality.py --preset demo --kernel-seeds 1 2 --out runs/sr

writes ``OUT/<preset>_k<seed>/`` (DDM's outputs) and ``OUT/<preset>_sr.json`` (or ``--json``), and prints a table;
``--table A.json B.json`` prints the table of earlier runs. An existing finished step 1 in
``OUT/<preset>_k<seed>/step1`` is reused (``--resume``; ``--step1-preset`` takes step 1's settings from another
preset, e.g. ``quality``'s step 2 on the ``demo`` preset's step 1: the report names both). ``--content mosaic``
builds both sets from mosaics of checkerboard blocks of every photo instead of halves (the JSON records it).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast.methods.ddm.presets import Preset, preset
from blindfast.methods.ddm.sr_synthetic import PADDING, sr_camera
from blindfast.metrics import ncc, psnr, ssim
from blindfast.physics import BlurDownsample, gaussian_kernel
from blindfast.restore import cg_tikhonov
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight
from ddm_kernel_runs import best_gaussians, learn_kernel, main, run_timings  # scripts/

FACTOR = 2
KERNEL_SIZE = 13
NOISE = 0.01
FRAME = 256
CG_ITERS = 50
SIGMA_RANGE = (1.5, 3.0)        # main-axis width, pixels
ANISOTROPY_RANGE = (0.25, 0.5)   # cross-axis / main-axis width


def true_kernel(seed: int) -> tuple[Tensor, dict]:
    """(k, k) float32 the SR kernel of ``seed`` and its parameters."""
    u = torch.rand(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    params = {"sigma": SIGMA_RANGE[0] + u[0] * (SIGMA_RANGE[1] - SIGMA_RANGE[0]),
              "anisotropy": ANISOTROPY_RANGE[0] + u[1] * (ANISOTROPY_RANGE[1] - ANISOTROPY_RANGE[0]),
              "angle": u[2] * math.pi}
    return gaussian_kernel(KERNEL_SIZE, params["sigma"], params["anisotropy"], params["angle"]), params


def bicubic_on_grid(low: Tensor, factor: int) -> Tensor:
    """(B, C, h, w) -> (B, C, f h, f w) bicubic upsampling with low-resolution pixel i on high-resolution pixel
    f i (BlurDownsample's grid; ``align_corners=True`` onto f (h - 1) + 1 pixels), the last f - 1 rows and columns
    repeated from the edge."""
    h, w = low.shape[-2:]
    up = F.interpolate(low, size=(factor * (h - 1) + 1, factor * (w - 1) + 1), mode="bicubic", align_corners=True)
    return F.pad(up, (0, factor - 1, 0, factor - 1), mode="replicate")


def restoration(camera, kernels: dict[str, Tensor]) -> dict[str, dict[str, list[float]]]:
    """PSNR and SSIM (per test photo) of CG with each (k, k) kernel, and of bicubic upsampling."""
    lam = tikhonov_weight(estimate_noise_std(camera.test_blurry))
    operator = BlurDownsample(FACTOR, PADDING)
    restored = {"bicubic": bicubic_on_grid(camera.test_blurry, FACTOR)}
    for name, kernel in kernels.items():
        restored[name] = cg_tikhonov(camera.test_blurry, operator, {"kernel": kernel.float()[None, None]}, lam=lam,
                                     iters=CG_ITERS, regulariser="gradient")
    return {name: {"psnr": psnr(x.clamp(0, 1), camera.test_sharp).tolist(),
                   "ssim": ssim(x.clamp(0, 1), camera.test_sharp).tolist()} for name, x in restored.items()}


def run_one(kernel_seed: int, chosen: Preset, out_dir: Path, resume: bool, progress: bool, content: str) -> dict:
    kernel, params = true_kernel(kernel_seed)
    camera = sr_camera(kernel, FACTOR, frame=FRAME, noise=NOISE, seed=kernel_seed, content=content)
    baselines = best_gaussians(kernel)
    report, learned, curve = learn_kernel(camera, kernel, chosen, out_dir, resume, progress, factor=FACTOR)
    kernels = {"learned": learned, "true": kernel.double(), "isotropic Gaussian": baselines["isotropic Gaussian"][0]}
    return {
        "kernel_seed": kernel_seed, "kernel": params, "learned_ncc": float(ncc(learned, kernel.double())),
        "baseline_ncc": {name: score for name, (_, score) in baselines.items()},
        "ncc_curve": curve, "restoration": restoration(camera, kernels), **run_timings(report),
    }


def print_table(runs: list[dict]) -> None:
    print(f"{'seed':>4} | {'NCC learned':>11} | {'delta':>5} | {'iso G':>5} | {'aniso G':>7} | PSNR / SSIM coffee, "
          f"chelsea: learned; true; iso G; bicubic")
    for run in runs:
        b, r = run["baseline_ncc"], run["restoration"]
        fmt = lambda name: ", ".join(f"{p:.2f}/{s:.3f}" for p, s in zip(r[name]["psnr"], r[name]["ssim"]))  # noqa: E731
        print(f"{run['kernel_seed']:>4} | {run['learned_ncc']:>11.3f} | {b['delta']:>5.3f} | "
              f"{b['isotropic Gaussian']:>5.3f} | {b['anisotropic Gaussian']:>7.3f} | {fmt('learned')}; "
              f"{fmt('true')}; {fmt('isotropic Gaussian')}; {fmt('bicubic')}")
        print("     curve (step: NCC): " + ", ".join(f"{c['step']}: {c['ncc']:.3f}" for c in run["ncc_curve"]))


if __name__ == "__main__":
    main(__doc__.split("\n")[0], name="sr", default_seeds=[1, 2],
         variant_preset=lambda name, seed: preset(name, seed, sr=FACTOR), run_one=run_one, print_table=print_table,
         settings={"factor": FACTOR, "kernel_size": KERNEL_SIZE, "noise": NOISE, "frame": FRAME,
                   "solver": f"cg_tikhonov on BlurDownsample({FACTOR}, {PADDING!r}), gradient, {CG_ITERS} iters"})
