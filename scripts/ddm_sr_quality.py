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
preset, e.g. ``quality``'s step 2 on the ``demo`` preset's step 1: the report names both).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from blindfast.methods.ddm.estimate import estimate_psf
from blindfast.methods.ddm.presets import PRESETS, Preset, preset as make_preset
from blindfast.methods.ddm.sr_synthetic import PADDING, sr_camera
from blindfast.metrics import ncc, psnr, ssim
from blindfast.physics import BlurDownsample, gaussian_kernel
from blindfast.restore import cg_tikhonov
from blindfast.restore.noise_level import estimate_noise_std, tikhonov_weight

FACTOR = 2
KERNEL_SIZE = 13
NOISE = 0.01
FRAME = 256
CG_ITERS = 50
SIGMA_RANGE = (1.5, 3.0)        # main-axis width, pixels
ANISOTROPY_RANGE = (0.25, 0.5)   # cross-axis / main-axis width
WIDTHS = torch.arange(0.3, 5.0001, 0.1, dtype=torch.float64)
ELONGATIONS = torch.arange(0.1, 1.0001, 0.05, dtype=torch.float64)
ANGLES = torch.arange(0, 180, 5, dtype=torch.float64) * math.pi / 180


def true_kernel(seed: int) -> tuple[Tensor, dict]:
    """(k, k) float32 the SR kernel of ``seed`` and its parameters."""
    u = torch.rand(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    params = {"sigma": SIGMA_RANGE[0] + u[0] * (SIGMA_RANGE[1] - SIGMA_RANGE[0]),
              "anisotropy": ANISOTROPY_RANGE[0] + u[1] * (ANISOTROPY_RANGE[1] - ANISOTROPY_RANGE[0]),
              "angle": u[2] * math.pi}
    return gaussian_kernel(KERNEL_SIZE, params["sigma"], params["anisotropy"], params["angle"]), params


def best_gaussians(kernel: Tensor) -> dict[str, tuple[Tensor, float]]:
    """The delta, the isotropic and the anisotropic Gaussian of highest NCC to ``kernel``: name -> (kernel, NCC)."""
    truth = kernel.double()
    delta = torch.zeros_like(truth)
    delta[KERNEL_SIZE // 2, KERNEL_SIZE // 2] = 1
    isotropic = torch.stack([gaussian_kernel(KERNEL_SIZE, float(w), dtype=torch.float64) for w in WIDTHS])
    sigma, elongation, angle = (v.reshape(-1) for v in torch.meshgrid(WIDTHS, ELONGATIONS, ANGLES, indexing="ij"))
    anisotropic = gaussian_kernel(KERNEL_SIZE, sigma, elongation, angle, dtype=torch.float64)[:, 0]
    out = {"delta": (delta, float(ncc(delta, truth)))}
    for name, candidates in (("isotropic Gaussian", isotropic), ("anisotropic Gaussian", anisotropic)):
        scores = ncc(candidates, truth)
        best = int(scores.argmax())
        out[name] = (candidates[best], float(scores[best]))
    return out


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


def run_one(kernel_seed: int, chosen: Preset, out_dir: Path, resume: bool, progress: bool) -> dict:
    kernel, params = true_kernel(kernel_seed)
    camera = sr_camera(kernel, FACTOR, frame=FRAME, noise=NOISE, seed=kernel_seed)
    baselines = best_gaussians(kernel)
    start = time.perf_counter()

    def against_truth(step: int, psf_grid: Tensor) -> dict:
        return {"ncc": float(ncc(psf_grid[0, :, 0, 0].double().mean(0), kernel.double())),
                "seconds": time.perf_counter() - start}

    report = estimate_psf(camera.sharp, camera.blurry, out_dir, grid=(1, 1), kernel_size=KERNEL_SIZE,
                          preset=chosen, resume=resume, progress=progress, callback=against_truth, factor=FACTOR)
    learned = torch.from_numpy(np.load(out_dir / "psf_grid.npy"))[0, :, 0, 0].double().mean(0)
    with open(out_dir / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    curve = [{"step": int(r["step"]), "stage": r["stage"], "ncc": float(r["ncc"])} for r in rows if r.get("ncc")]
    kernels = {"learned": learned, "true": kernel.double(), "isotropic Gaussian": baselines["isotropic Gaussian"][0]}
    return {
        "kernel_seed": kernel_seed, "kernel": params, "learned_ncc": float(ncc(learned, kernel.double())),
        "baseline_ncc": {name: score for name, (_, score) in baselines.items()},
        "ncc_curve": curve, "restoration": restoration(camera, kernels),
        "noise_std_estimated": report["noise_std_estimated"], "noise_std_learned": report["noise_std_learned"],
        "step1_s": report["step1_s"], "step2_s": report["step2_s"], "step2_steps": report["step2_steps"],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS[:2], default="demo")
    parser.add_argument("--step1-preset", choices=PRESETS[:2], default=None,
                        help="take step 1's settings from this preset (default: --preset's)")
    parser.add_argument("--kernel-seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0, help="DDM's generators")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="default: OUT/<preset>_sr.json")
    parser.add_argument("--table", type=Path, nargs="+", default=None, help="only print these results' table")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.table:
        print_table([run for path in args.table for run in json.loads(path.read_text())["runs"]])
        return
    if args.out is None:
        parser.error("--out is required")
    chosen = make_preset(args.preset, args.seed, sr=FACTOR)
    if args.step1_preset:
        chosen = Preset(chosen.name, chosen.patch, make_preset(args.step1_preset, args.seed).step1, chosen.step2)
    runs = [run_one(seed, chosen, args.out / f"{args.preset}_k{seed}", args.resume, not args.quiet)
            for seed in args.kernel_seeds]
    result = {"preset": args.preset, "step1_preset": args.step1_preset or args.preset, "seed": args.seed,
              "factor": FACTOR, "kernel_size": KERNEL_SIZE, "noise": NOISE,
              "frame": FRAME, "threads": torch.get_num_threads(),
              "solver": f"cg_tikhonov on BlurDownsample({FACTOR}, {PADDING!r}), gradient, {CG_ITERS} iters",
              "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.json or args.out / f"{args.preset}_sr.json").write_text(json.dumps(result, indent=2))
    print_table(runs)


if __name__ == "__main__":
    main()
